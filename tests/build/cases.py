"""Dockerfiles built by both `docker build` and `sandkit build` in the interop tests
(test_docker_interop.py), with their build contexts. Together they use every instruction the
issue lists; each stays small, so that a difference points at one instruction.

The base image is BASE: a busybox root filesystem (tests/rootfs.py, users root, app (1000) and
nobody) that the tests import into Docker and load from `docker save` into sandkit, so both
tools start from byte-for-byte the same image and never pull. Docker's classic builder (Debian's
docker.io has no BuildKit) refuses COPY --chmod, so no case uses it here.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from typing import NamedTuple

BASE = "sandkit-build/busybox:1"


class Link(NamedTuple):
    """A symbolic link in a build context."""

    target: str


class Case(NamedTuple):
    id: str
    dockerfile: str
    # Context files: path -> contents, (contents, mode) or a Link.
    files: Mapping[str, bytes | tuple[bytes, int] | Link] = {}
    build_args: Mapping[str, str] = {}
    target: str | None = None


def _tar(entries: dict[str, bytes]) -> bytes:
    """A tar archive of ``entries`` (ADD unpacks it), with fixed owners, modes and times."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, 7, 8, 1e9
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CASES = [
    Case(
        "run-shell-form",
        f"FROM {BASE}\n"
        "RUN echo hello > /hello && mkdir -p /a/b/c && chmod 750 /a/b && touch /a/b/c/f\n"
        "RUN chown 1000:50 /a/b/c/f && chmod 4755 /a/b/c/f && echo $HOME > /home-seen\n",
    ),
    Case(
        "run-exec-form-and-shell",
        f"FROM {BASE}\n"
        'RUN ["sh", "-c", "echo exec > /exec"]\n'
        'SHELL ["/bin/sh", "-ec"]\n'
        "RUN echo $0 > /shell-seen\n"
        'CMD echo "shell form cmd"\n',
    ),
    Case(
        "copy-files-dirs-globs",
        f"FROM {BASE}\n"
        "COPY a.txt /one/\n"
        "COPY *.txt /many/\n"
        "COPY dir /dir-contents\n"
        "COPY dir/sub/x.bin b.txt /mixed/\n",
        files={
            "a.txt": b"a\n",
            "b.txt": (b"b\n", 0o600),
            "c.md": b"not a txt\n",
            "dir/one": (b"1\n", 0o755),
            "dir/sub/x.bin": b"\x00\x01\x02",
            "dir/sub/link": Link("../one"),
        },
    ),
    Case(
        "copy-chown",
        f"FROM {BASE}\n"
        "COPY --chown=1000:50 a.txt /owned-ids\n"
        "COPY --chown=app:app dir /owned-names/\n"
        "COPY --chown=app a.txt /owned-user-only\n",
        files={"a.txt": b"a\n", "dir/f": b"f\n", "dir/d/g": b"g\n"},
    ),
    Case(
        "add-local-tar-and-file",
        f"FROM {BASE}\n"
        "ADD archive.tar /unpacked/\n"
        "ADD plain.txt /added/plain.txt\n"
        "ADD archive.tar /again\n",
        files={
            "archive.tar": _tar({"top.txt": b"top\n", "in/deeper.txt": b"deep\n"}),
            "plain.txt": b"plain\n",
        },
    ),
    Case(
        "env-and-substitution",
        f"FROM {BASE}\n"
        "ENV APP=/srv/app VERSION=1.2\n"
        'ENV SPACED="a b  c" ESCAPED=one\\ two QUOTE="say \\"hi\\""\n'
        "ENV DERIVED=${APP}/v$VERSION UNSET_DEFAULT=${NOPE:-fallback} SET_ALT=${APP:+alt}\n"
        "ENV PATH=$APP/bin:$PATH\n"
        "WORKDIR $APP\n"
        "COPY a.txt ${APP}/data/\n"
        'RUN echo "$DERIVED $UNSET_DEFAULT $SET_ALT" > env-seen\n',
        files={"a.txt": b"a\n"},
    ),
    Case(
        "arg-before-and-after-from",
        "ARG BASE_IMAGE=" + BASE + "\n"
        "ARG UNUSED=x\n"
        "FROM ${BASE_IMAGE}\n"
        "ARG GIVEN\n"
        "ARG DEFAULTED=default-value\n"
        "ARG BASE_IMAGE\n"
        'RUN echo "$GIVEN $DEFAULTED $BASE_IMAGE" > /args-seen\n'
        "ENV FROM_ARG=$GIVEN\n",
        build_args={"GIVEN": "from-the-command-line"},
    ),
    Case(
        "workdir-and-user",
        f"FROM {BASE}\n"
        "WORKDIR /work/deep\n"
        "WORKDIR relative\n"
        "RUN pwd > /pwd-seen && chown app /work/deep/relative\n"
        "USER app\n"
        "RUN id > /tmp/id-seen && touch /work/deep/relative/mine\n"
        "USER 1000:50\n",
    ),
    Case(
        "entrypoint-and-cmd",
        f'FROM {BASE}\nENTRYPOINT ["/bin/echo", "entry"]\nCMD ["default", "args"]\n',
    ),
    Case(
        "entrypoint-shell-form-resets-cmd",
        f'FROM {BASE}\nCMD ["ignored"]\nENTRYPOINT echo shell form\n',
    ),
    Case(
        "metadata",
        f"FROM {BASE}\n"
        "EXPOSE 80 8080/tcp 53/udp\n"
        'LABEL version="1.0" "with space"="a value" multi=a\\ b\n'
        "LABEL org.opencontainers.image.title=demo\n"
        "VOLUME /data\n"
        'VOLUME ["/cache", "/logs"]\n'
        "STOPSIGNAL SIGINT\n",
    ),
    Case(
        "healthcheck",
        f"FROM {BASE}\n"
        "HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --retries=4 "
        "CMD test -e /hello || exit 1\n",
    ),
    Case(
        "healthcheck-exec-then-none",
        f'FROM {BASE}\nHEALTHCHECK CMD ["true"]\nFROM {BASE}\nHEALTHCHECK NONE\n',
    ),
    Case(
        "multi-stage",
        f"FROM {BASE} AS builder\n"
        "RUN mkdir /out && echo built > /out/artifact && chmod 700 /out/artifact\n"
        # (Docker's classic builder builds an unused stage too, BuildKit and sandkit skip it.)
        f"FROM {BASE} AS unused\n"
        "RUN echo unused > /unused\n"
        f"FROM {BASE}\n"
        "COPY --from=builder /out /from-builder\n"
        "COPY --from=0 /out/artifact /by-index\n",
    ),
    Case(
        "target-stage",
        f"FROM {BASE} AS first\n"
        "RUN echo first > /stage\n"
        "ENV STAGE=first\n"
        "FROM first AS second\n"
        "RUN echo second > /stage\n",
        target="first",
    ),
    Case(
        "copy-from-image",
        f"FROM {BASE}\nCOPY --from={BASE} /etc/passwd /copied/passwd\n",
    ),
    Case(
        "deletions-whiteouts-opaque",
        f"FROM {BASE}\n"
        "RUN mkdir -p /d/keep /d/gone && touch /d/keep/k /d/gone/g /d/file /f1\n"
        "RUN rm -rf /d/gone /f1 /etc/group /bin/vi && rm /d/file\n"
        "RUN rm -rf /home/app && mkdir /home/app && echo new > /home/app/only\n",
    ),
    Case(
        "links",
        f"FROM {BASE}\n"
        "RUN echo x > /target && ln /target /hard && ln -s /target /soft && ln -s nowhere /dangling\n"
        "COPY linked /linked\n",
        files={"linked/file": b"f\n", "linked/to-file": Link("file")},
    ),
    Case(
        "dockerignore",
        f"FROM {BASE}\nCOPY . /ctx/\n",
        files={
            ".dockerignore": b"*.log\nsecret/\n!keep.log\n**/*.tmp\n",
            "app.py": b"print(1)\n",
            "debug.log": b"no\n",
            "keep.log": b"yes\n",
            "secret/key": b"no\n",
            "src/a.tmp": b"no\n",
            "src/a.py": b"yes\n",
        },
    ),
    Case(
        "scratch",
        'FROM scratch\nCOPY a.txt /\nCOPY dir /dir\nENV PATH=/\nCMD ["/a.txt"]\n',
        files={"a.txt": (b"a\n", 0o755), "dir/f": b"f\n"},
    ),
]
