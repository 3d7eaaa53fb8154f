"""Image root filesystems: built-in bases and scenario images built from a base plus overrides."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
BUSYBOX_BINARY = Path("/bin/busybox")
BASES = ("busybox", "distroless", "scratch", "debug", "scanner")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(ValueError):
    pass


@dataclass
class FileSpec:
    content: str | None = None
    copy: str | None = None
    mode: str | None = None
    uid: int = 0
    gid: int = 0


@dataclass
class ImageSpec:
    """A scenario image: a base plus overrides (DESIGN.md §3)."""

    base: str = "busybox"
    files: dict[str, FileSpec] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    os_release: dict[str, str] = field(default_factory=dict)
    packages: list[dict[str, str]] = field(default_factory=list)
    package_format: str | None = None  # dpkg | dpkg-status.d | apk; default from the base
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Image:
    ref: str
    rootfs: Path
    entrypoint: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...]
    base: str


def normalize_ref(ref: str) -> tuple[str, str]:
    """(repository, tag) with registry, `library/` and digest removed: `docker.io/library/busybox:1.36`
    and `busybox:1.36` are the same image."""
    name = ref.split("@", 1)[0]
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), tag


def base_for(repository: str) -> str | None:
    if repository in ("busybox", "scratch"):
        return repository
    if repository == "distroless" or repository.startswith("distroless/"):
        return "distroless"
    if repository == "fleetscan/debug":
        return "debug"
    if repository == "fleetscan/scanner":
        return "scanner"
    return None


# -- safe writing inside a root folder ------------------------------------------------------
def inside(root: Path, path: str, *, make_parents: bool = True) -> Path:
    """Host path for image path `path`, refusing anything that could leave the root (.., symlinks)."""
    if not path.startswith("/") or any(p in ("..", ".") for p in path.split("/")):
        raise ImageError(f"{path!r}: paths must be absolute and normalised")
    current = root
    parts = [p for p in path.split("/") if p]
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise ImageError(f"{path!r}: parent {current.relative_to(root)} is a symlink; write the target instead")
        if not current.exists():
            if not make_parents:
                raise ImageError(f"{path!r}: no such directory")
            current.mkdir(mode=0o755)
    return root.joinpath(*parts) if parts else root


def _clear(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        raise ImageError(f"{target.name!r} is a directory")


def _chown(path: Path, uid: int, gid: int) -> None:
    """Only root can give files away. A non-root (rootless) emulator owns every image file, which
    its user namespace shows as root's."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    elif (uid, gid) != (0, 0):
        log.warning("rootless: %s keeps its owner (wanted %d:%d)", path.name, uid, gid)


def _write(root: Path, path: str, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    target = inside(root, path)
    _clear(target)
    target.write_bytes(data)
    _chown(target, uid, gid)
    os.chmod(target, mode)  # after chown: chown clears setuid bits


def _parse_mode(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(str(text), 8)
    except ValueError as exc:
        raise ImageError(f'mode {text!r} is not an octal string such as "0644"') from exc
    if not 0 <= value <= 0o7777:
        raise ImageError(f"mode {text!r} is out of range")
    return value


# -- base images ----------------------------------------------------------------------------
_BUSYBOX_PASSWD = [
    "root:x:0:0:root:/root:/bin/sh",
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false",
    "bin:x:2:2:bin:/bin:/bin/false",
    "sys:x:3:3:sys:/dev:/bin/false",
    "nobody:x:65534:65534:nobody:/home:/bin/false",
]
_BUSYBOX_GROUP = ["root:x:0:", "daemon:x:1:", "bin:x:2:", "sys:x:3:", "tty:x:5:", "nogroup:x:65534:"]
_DISTROLESS_PASSWD = [
    "root:x:0:0:root:/root:/sbin/nologin",
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
]
_DISTROLESS_GROUP = ["root:x:0:", "nobody:x:65534:", "tty:x:5:", "staff:x:50:", "nonroot:x:65532:"]
_DISTROLESS_OS = {
    "PRETTY_NAME": "Distroless",
    "NAME": "Debian GNU/Linux",
    "ID": "debian",
    "VERSION_ID": "12",
    "VERSION": "Debian GNU/Linux 12 (bookworm)",
    "HOME_URL": "https://github.com/GoogleContainerTools/distroless",
}
_DISTROLESS_PACKAGES = [
    {"name": "base-files", "version": "12.4+deb12u11"},
    {"name": "netbase", "version": "6.4"},
    {"name": "tzdata", "version": "2025b-0+deb12u1"},
    {"name": "media-types", "version": "10.0.0"},
]
_DEFAULT_FORMAT = {
    "busybox": "apk",
    "debug": "apk",
    "scanner": "apk",
    "distroless": "dpkg-status.d",
    "scratch": "dpkg-status.d",
}


def _shadow_line(name: str, password: str = "*") -> str:
    return f"{name}:{password}:19700:0:99999:7:::"


def _build_busybox(root: Path, marker: str | None) -> None:
    for d in ("bin", "etc", "home", "root", "tmp", "usr/bin", "usr/sbin", "var/log", "proc", "dev", "lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(BUSYBOX_BINARY, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("\n".join(_BUSYBOX_PASSWD) + "\n")
    (root / "etc/group").write_text("\n".join(_BUSYBOX_GROUP) + "\n")
    _write(
        root, "/etc/shadow", ("\n".join(_shadow_line(u.split(":")[0]) for u in _BUSYBOX_PASSWD) + "\n").encode(), 0o600
    )
    if marker:
        _write(root, "/etc/fleetscan-image", f"{marker}\n".encode(), 0o644)


def _build_distroless(root: Path, app: Path) -> None:
    for d in ("etc", "home/nonroot", "root", "tmp", "proc", "dev", "var/lib/dpkg/status.d", "app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    _chown(root / "home/nonroot", 65532, 65532)
    (root / "etc/passwd").write_text("\n".join(_DISTROLESS_PASSWD) + "\n")
    (root / "etc/group").write_text("\n".join(_DISTROLESS_GROUP) + "\n")
    _write_os_release(root, _DISTROLESS_OS)
    _write_packages(root, "dpkg-status.d", _DISTROLESS_PACKAGES)
    _write(root, "/app/server", app.read_bytes(), 0o755)


def _write_os_release(root: Path, values: dict[str, str]) -> None:
    text = "".join(f'{k}="{v}"\n' if any(c in v for c in " ()") else f"{k}={v}\n" for k, v in values.items())
    _write(root, "/etc/os-release", text.encode(), 0o644)


def _dpkg_paragraph(pkg: dict[str, str], with_status: bool) -> str:
    lines = [f"Package: {pkg['name']}"]
    if with_status:
        lines.append("Status: install ok installed")
    lines += [
        f"Architecture: {pkg.get('arch', 'amd64')}",
        f"Version: {pkg['version']}",
        "Maintainer: fleetscan emulator <noreply@example.invalid>",
        f"Description: {pkg.get('description', pkg['name'])}",
    ]
    return "\n".join(lines) + "\n"


def _write_packages(root: Path, fmt: str, packages: list[dict[str, str]]) -> None:
    for pkg in packages:
        if not pkg.get("name") or not pkg.get("version"):
            raise ImageError(f"package {pkg!r} needs a name and a version")
    if fmt == "dpkg-status.d":
        for pkg in packages:
            _write(root, f"/var/lib/dpkg/status.d/{pkg['name']}", _dpkg_paragraph(pkg, False).encode(), 0o644)
    elif fmt == "dpkg":
        path = inside(root, "/var/lib/dpkg/status")
        old = path.read_text() if path.exists() else ""
        text = old + "".join(_dpkg_paragraph(p, True) + "\n" for p in packages)
        _write(root, "/var/lib/dpkg/status", text.encode(), 0o644)
    elif fmt == "apk":
        path = inside(root, "/lib/apk/db/installed")
        old = path.read_text() if path.exists() else ""
        text = old + "".join(
            f"P:{p['name']}\nV:{p['version']}\nA:{p.get('arch', 'x86_64')}\nT:{p.get('description', p['name'])}\n\n"
            for p in packages
        )
        _write(root, "/lib/apk/db/installed", text.encode(), 0o644)
    else:
        raise ImageError(f"package_format {fmt!r}: use dpkg, dpkg-status.d or apk")


# -- overrides --------------------------------------------------------------------------------
def _table(root: Path, path: str) -> list[list[str]]:
    target = inside(root, path)
    if not target.exists():
        return []
    return [line.split(":") for line in target.read_text().splitlines() if line.strip()]


def _save_table(root: Path, path: str, rows: list[list[str]], mode: int) -> None:
    target = inside(root, path)
    keep = os.lstat(target) if target.exists() else None
    _write(
        root,
        path,
        ("\n".join(":".join(r) for r in rows) + "\n").encode(),
        stat.S_IMODE(keep.st_mode) if keep else mode,
        keep.st_uid if keep else 0,
        keep.st_gid if keep else 0,
    )


def _upsert(rows: list[list[str]], row: list[str]) -> None:
    for i, existing in enumerate(rows):
        if existing[0] == row[0]:
            rows[i] = row
            return
    rows.append(row)


def apply_overrides(root: Path, spec: ImageSpec, base_root: Path) -> None:
    for path in spec.remove:
        target = inside(root, path, make_parents=False)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for path, f in spec.files.items():
        if (f.content is None) == (f.copy is None):
            raise ImageError(f"file {path}: give exactly one of content or copy")
        if f.copy is not None:
            source = inside(base_root, f.copy, make_parents=False)
            # A base symlink is resolved on the host: it must not lead out of the base image.
            if not os.path.realpath(source).startswith(os.path.realpath(base_root) + os.sep) or not source.is_file():
                raise ImageError(f"file {path}: copy source {f.copy} is not a file in the base image")
            data = source.read_bytes()
            default_mode = stat.S_IMODE(source.stat().st_mode)
        else:
            data = (f.content or "").encode()
            default_mode = 0o644
        _write(root, path, data, _parse_mode(f.mode, default_mode), f.uid, f.gid)
    for path, target_path in spec.symlinks.items():
        link = inside(root, path)
        _clear(link)
        link.symlink_to(target_path)
    if spec.groups:
        rows = _table(root, "/etc/group")
        for g in spec.groups:
            _upsert(rows, [g["name"], "x", str(g["gid"]), ",".join(g.get("members") or [])])
        _save_table(root, "/etc/group", rows, 0o644)
    if spec.users or spec.passwords:
        passwd = _table(root, "/etc/passwd")
        shadow = _table(root, "/etc/shadow")
        for u in spec.users:
            uid = int(u["uid"])
            gid = int(u.get("gid", uid))
            _upsert(
                passwd,
                [
                    u["name"],
                    "x",
                    str(uid),
                    str(gid),
                    u.get("gecos", ""),
                    u.get("home", f"/home/{u['name']}"),
                    u.get("shell", "/sbin/nologin"),
                ],
            )
            if not any(r[0] == u["name"] for r in shadow):
                shadow.append(_shadow_line(u["name"], "!").split(":"))
        known = {r[0] for r in passwd}
        for name, value in spec.passwords.items():
            if name not in known:
                raise ImageError(f"passwords: user {name!r} is not in /etc/passwd; add it under users")
            row = next((r for r in shadow if r[0] == name), None)
            if row is None:
                shadow.append(_shadow_line(name, value).split(":"))
            else:
                row[1] = value
        _save_table(root, "/etc/passwd", passwd, 0o644)
        _save_table(root, "/etc/shadow", shadow, 0o600)
    if spec.os_release:
        _write_os_release(root, spec.os_release)
    if spec.packages:
        fmt = spec.package_format or _default_format(spec)
        _write_packages(root, fmt, spec.packages)


def _default_format(spec: ImageSpec) -> str:
    if spec.base in ("busybox", "debug", "scanner") and spec.os_release.get("ID") in ("debian", "ubuntu"):
        return "dpkg"
    return _DEFAULT_FORMAT.get(spec.base, "dpkg")


class ImageStore:
    """Image references to root folders. Bases are built on first use; scenario images eagerly."""

    def __init__(self, workdir: Path, helper: Path) -> None:
        self._dir = workdir
        self._helper = helper
        self._bases: dict[str, Image] = {}
        self._custom: dict[tuple[str, str], Image] = {}
        self._dir.mkdir(parents=True, exist_ok=True)

    def _base(self, name: str) -> Image:
        if name in self._bases:
            return self._bases[name]
        root = self._dir / f"base-{name}"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(mode=0o755)
        entrypoint: tuple[str, ...] | None = None
        if name in ("busybox", "debug", "scanner"):
            if not BUSYBOX_BINARY.exists():
                raise ImageError("the busybox images need /bin/busybox (apt-get install busybox-static)")
            _build_busybox(root, None if name == "busybox" else f"fleetscan/{name}")
        elif name == "distroless":
            _build_distroless(root, self._helper)
            entrypoint = ("/app/server",)
        image = Image(name, root, entrypoint, (("PATH", DEFAULT_PATH),), name)
        self._bases[name] = image
        return image

    def add(self, ref: str, spec: ImageSpec) -> Image:
        if spec.base not in BASES:
            raise ImageError(f"base {spec.base!r} is not one of {', '.join(BASES)}")
        base = self._base(spec.base)
        root = self._dir / f"img-{len(self._custom):04d}"
        if root.exists():
            shutil.rmtree(root)
        # cp -a keeps owners (copytree does not), e.g. distroless /home/nonroot
        subprocess.run(["cp", "-a", str(base.rootfs), str(root)], check=True)
        apply_overrides(root, spec, base.rootfs)
        entrypoint = tuple(spec.entrypoint) if spec.entrypoint else base.entrypoint
        env = dict(base.env)
        env.update(spec.env)
        image = Image(ref, root, entrypoint, tuple(env.items()), spec.base)
        self._custom[normalize_ref(ref)] = image
        return image

    def resolve(self, ref: str) -> Image | None:
        key = normalize_ref(ref)
        if key in self._custom:
            return self._custom[key]
        base = base_for(key[0])
        return self._base(base) if base else None
