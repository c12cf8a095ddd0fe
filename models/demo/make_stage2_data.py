"""Write the stage-2 data set of the demo model: seed-1 and seed-3 training images, seed-1 validation images.

Usage: python models/demo/make_stage2_data.py DATA_DIR   (DATA_DIR holds factory-train/ and factory-extra/)
"""

import sys
from pathlib import Path

import yaml

data = Path(sys.argv[1]).resolve()
out = data / "ft"
out.mkdir(parents=True, exist_ok=True)
images = sorted(str(p) for p in (data / "factory-train/images/train").glob("*.png"))
images += sorted(str(p) for p in (data / "factory-extra/images/train").glob("*.png"))
(out / "train.txt").write_text("\n".join(images) + "\n")
spec = yaml.safe_load((data / "factory-train/data.yaml").read_text())
spec.update(path=str(out), train="train.txt", val=str(data / "factory-train/images/val"))
(out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
print(f"{out / 'data.yaml'}: {len(images)} training images")
