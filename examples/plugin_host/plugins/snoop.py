"""A hostile plugin: it tries to read a file of the host, even told its exact path."""


def run(request: dict) -> dict:
    with open(request["host_file"]) as f:
        return {"stolen": f.read()}
