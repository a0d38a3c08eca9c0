"""A well-behaved plugin: returns the text in capitals, and a word count."""


def run(request: dict) -> dict:
    text = request["text"]
    return {"text": text.upper(), "words": len(text.split())}
