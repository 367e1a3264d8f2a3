"""`python -m bench.long_queries`: how long a hostile client's 10,000-character query takes at each endpoint of a
running app, and how large a figure it gets back (JSON out). Start the app first (`python app.py`), then point this at
it with --url; run it against two checkouts' servers one after the other to compare them on one machine."""

from __future__ import annotations

import argparse
import json
import time

from bench.measure import log, machine_info

QUERY = " ".join(f"a red circle number {i} moves slowly to the left of the blue square" for i in range(160))


def timed(client, *args, api_name: str) -> dict:
    """Seconds for one call, and the size of what came back (its JSON), or the error it gave."""
    start = time.perf_counter()
    try:
        result = client.predict(*args, api_name=api_name)
        error = None
    except Exception as err:  # noqa: BLE001 (a refusal is a result here: its time is what counts)
        result, error = None, str(err)[:200]
    seconds = time.perf_counter() - start
    size = len(json.dumps(result, default=str)) if result is not None else 0
    return {"endpoint": api_name, "seconds": round(seconds, 2), "bytes": size, "error": error}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:7860")
    p.add_argument("--model", default="drl-wti")
    p.add_argument("--label", default="", help="which checkout the server runs (stored in the JSON)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import gradio_client
    import torch

    client = gradio_client.Client(args.url, verbose=False)
    ctx = (args.model, "", "test")
    client.predict(*ctx, api_name="/load")  # the engine is built before anything is timed
    rows = [timed(client, QUERY, 10, "auto", *ctx, api_name="/search"),
            timed(client, QUERY, "", "", "", *ctx, api_name="/explain"),
            timed(client, QUERY, "", "auto", *ctx, api_name="/counterfactual")]
    for row in rows:
        log(json.dumps(row))
    result = {"label": args.label, "query_chars": len(QUERY), "model": args.model,
              "machine": machine_info(torch.device("cpu")), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
