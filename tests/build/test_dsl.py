"""The Python DSL renders the Dockerfile a person would write (the Dockerfile reference's forms),
and refuses what no Dockerfile line can hold instead of letting it become an instruction.
That Docker's own parser reads these renderings back as the same values is test_docker_dsl.py's
job; that sandkit builds them to the same digest as the Dockerfile, test_dsl_build.py's."""

from __future__ import annotations

import pytest

from sandkit import Image
from sandkit.errors import BuildError


def lines(recipe) -> list[str]:
    return recipe.dockerfile().splitlines()


def test_the_issue_example_renders_as_its_dockerfile(tmp_path):
    recipe = (
        Image.from_("base:1", context=tmp_path)
        .run("apt-get install -y x")
        .copy("src/", "/app")
        .env(A="1")
        .workdir("/app")
        .cmd(["python3", "main.py"])
    )
    assert lines(recipe) == [
        "FROM base:1",
        "RUN apt-get install -y x",
        'COPY ["src/", "/app"]',
        "ENV A=1",
        "WORKDIR /app",
        'CMD ["python3", "main.py"]',
    ]
    assert recipe.context == tmp_path


def test_every_instruction(tmp_path):
    recipe = (
        Image.from_("scratch", context=tmp_path, platform="linux/amd64")
        .arg("VERSION", "1.0")
        .shell(["/bin/sh", "-ec"])
        .run(["echo", "exec form"])
        .add(["a.tar", "b"], "/opt/", chown="1000:1000", chmod=0o640)
        .copy("x", "/x", from_="other:2")
        .label({"org.opencontainers.image.title": "t"}, extra="e")
        .user(1000)
        .entrypoint(["/bin/app"])
        .cmd("serve --port 80")
        .expose(80, "53/udp")
        .volume("/data", "/cache")
        .stopsignal("SIGINT")
        .healthcheck("wget -q localhost", interval=30, timeout=2.5, start_period=0, retries=3)
        .healthcheck(None)
    )
    assert lines(recipe) == [
        "FROM --platform=linux/amd64 scratch",
        "ARG VERSION=1.0",
        'SHELL ["/bin/sh", "-ec"]',
        'RUN ["echo", "exec form"]',
        'ADD --chown=1000:1000 --chmod=640 ["a.tar", "b", "/opt/"]',
        'COPY --from=other:2 ["x", "/x"]',
        "LABEL org.opencontainers.image.title=t extra=e",
        "USER 1000",
        'ENTRYPOINT ["/bin/app"]',
        "CMD serve --port 80",
        "EXPOSE 80 53/udp",
        'VOLUME ["/data", "/cache"]',
        "STOPSIGNAL SIGINT",
        "HEALTHCHECK --interval=30000ms --timeout=2500ms --start-period=0ms --retries=3 "
        "CMD wget -q localhost",
        "HEALTHCHECK NONE",
    ]


def test_quotes_and_backslashes_are_escaped_and_a_dollar_is_substituted_unless_escaped():
    recipe = Image.from_("base:1").env(A='say "hi"', B="C:\\dir\\", C="$HOME/bin", D="\\$HOME")
    (env,) = lines(recipe)[1:]
    assert env == r'ENV A="say \"hi\"" B="C:\\dir\\" C=$HOME/bin D="\$HOME"'


def test_copy_from_a_recipe_renders_it_as_an_earlier_stage():
    builder = Image.from_("golang:1").run("go build -o /out/app .")
    recipe = Image.from_("scratch").copy("/out/app", "/app", from_=builder).entrypoint(["/app"])
    assert lines(recipe) == [
        "FROM golang:1 AS stage-0",
        "RUN go build -o /out/app .",
        "FROM scratch",
        'COPY --from=stage-0 ["/out/app", "/app"]',
        'ENTRYPOINT ["/app"]',
    ]


def test_a_recipe_as_base_and_shared_stages_are_rendered_once():
    base = Image.from_("debian:12").run("apt-get update")
    tools = Image.from_(base).run("make tools")
    app = Image.from_(base).copy("/usr/bin/tool", "/bin/tool", from_=tools).cmd(["tool"])
    assert lines(app) == [
        "FROM debian:12 AS stage-0",
        "RUN apt-get update",
        "FROM stage-0 AS stage-1",
        "RUN make tools",
        "FROM stage-0",
        'COPY --from=stage-1 ["/usr/bin/tool", "/bin/tool"]',
        'CMD ["tool"]',
    ]


def test_a_chain_is_immutable_so_branches_do_not_share_steps():
    base = Image.from_("base:1").run("true")
    one = base.env(A="1")
    two = base.env(B="2")
    assert lines(base) == ["FROM base:1", "RUN true"]
    assert lines(one)[-1] == "ENV A=1"
    assert lines(two)[-1] == "ENV B=2"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda r: r.run("echo a\nUSER root"), "line break"),
        (lambda r: r.run("echo a\rUSER root"), "line break"),
        (lambda r: r.run("echo a \\"), "ends in"),
        (lambda r: r.run('["echo", "a"]'), "exec form"),
        (lambda r: r.run(""), "needs a command"),
        (lambda r: r.run([]), "at least one"),
        (lambda r: r.cmd(["echo", 1]), "list of strings"),
        (lambda r: r.env(A="x\nRUN rm -rf /"), "line break"),
        (lambda r: r.env(**{"A B": "1"}), "not valid"),
        (lambda r: r.env(), "at least one"),
        (lambda r: r.label({"k": "v\n"}), "line break"),
        (lambda r: r.arg("1ABC"), "not valid"),
        (lambda r: r.workdir("/a b"), "whitespace"),
        (lambda r: r.workdir(""), "non-empty"),
        (lambda r: r.workdir("/a\\"), "ends in"),
        (lambda r: r.expose("80\\"), "ends in"),
        (lambda r: r.stopsignal("\\"), "ends in"),
        (lambda r: r.user("root\nRUN x"), "whitespace"),
        (lambda r: r.copy("a\nb", "/x"), "line break"),
        (lambda r: r.copy([], "/x"), "at least one source"),
        (lambda r: r.copy("a", "/x", chmod="rwx"), "octal"),
        (lambda r: r.copy("a", "/x", chown="a b"), "whitespace"),
        (lambda r: r.expose(), "at least one"),
        (lambda r: r.healthcheck(["true"], interval=-1), "negative"),
    ],
)
def test_what_no_dockerfile_line_can_hold_is_refused(make, cause):
    base = Image.from_("base:1")
    with pytest.raises(BuildError, match=cause):
        make(base)


def test_a_base_that_is_not_one_word_is_refused():
    with pytest.raises(BuildError, match="whitespace"):
        Image.from_("base:1\nRUN x")


def test_a_detached_container_refuses_a_recipe_before_anything_starts():
    import sandkit
    from sandkit.errors import ContainerError

    with pytest.raises(ContainerError, match=r"recipe\.build"):
        sandkit.Container(Image.from_("base:1"), detach=True, name="from-a-recipe")


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\x00", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_every_character_a_parser_may_end_a_line_at_is_refused(char):
    """Docker ends lines at \\n only; sandkit's parser (str.splitlines) at these too: a value
    holding one would be read as two instructions by one of them."""
    base = Image.from_("base:1")
    for make in (
        lambda: base.env(A=f"x{char}USER root"),
        lambda: base.label({"k": f"v{char}CMD x"}),
        lambda: base.run(f"echo a{char}USER root"),
        lambda: base.copy(f"a{char}b", "/x"),
    ):
        with pytest.raises(BuildError, match="line break"):
            make()
