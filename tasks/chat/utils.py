"""lm-eval hooks of the chat tasks (tasks/chat/*)."""


def process_results(doc: dict, results: list) -> dict:
    """One assistant turn's (log-likelihood, UTF-8 bytes of the response): lm-eval's bits_per_byte and
    weighted_perplexity aggregations sum both over turns before dividing."""
    loglik = results[0][0]
    nbytes = len(doc["response"].encode("utf-8"))
    return {"bits_per_byte": (loglik, nbytes), "byte_perplexity": (loglik, nbytes)}
