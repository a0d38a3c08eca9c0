"""A plugin with a bug: it raises. The host gets a sandkit.RemoteError with its traceback."""


def run(request: dict) -> dict:
    words = request["text"].split()
    return {"average length": sum(len(w) for w in words) / (len(words) - len(words))}
