import pytest

pytestmark = pytest.mark.trainer


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, demo_int8_model_path, demo_model_path):
    """Two signed releases (1.0.0 #1 and 1.1.0 #2) and an online bundle of each."""
    from trainer.release.build import ReleaseSpec, build_bundle, build_release
    from trainer.release.keys import init_keys
    from trainer.release.repo import Repository

    root = tmp_path_factory.mktemp("rel")
    ring = init_keys(root / "keys")
    repo = Repository(root / "repo", ring)
    repo.init()
    out = {}
    for version, model in (("1.0.0", demo_model_path), ("1.1.0", demo_int8_model_path)):
        build_release(
            repo,
            ReleaseSpec(
                name="demo",
                version=version,
                channel="stable",
                files={"onnx": demo_model_path, "onnx_int8": model},
                health_role="onnx_int8",
            ),
        )
        out[version] = build_bundle(root / "repo", ring, root / f"{version}.tar", "stable", trust="online")
    return out
