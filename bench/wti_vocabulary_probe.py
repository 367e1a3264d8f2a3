"""The WTI-weight vocabulary probe (docs/wti-weights.md): the synthetic benchmark with 21 colour names instead of 7, everything else as the
defaults, so that a caption's colour word names a third as many clips (bench/notes/wti_vocabulary_probe.json).

    python bench/wti_vocabulary_probe.py --out data/synthetic-21c
    python -m tvr_demo train --config drl-wti --dataset data/synthetic-21c --out runs/drl-wti-21c
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvr_demo.data.synthetic import SyntheticConfig, generate  # noqa: E402
from tvr_demo.data.synthetic.vocabulary import COLOURS  # noqa: E402

EXTRA_COLOURS = {  # name: (RGB, the one word a caption uses); hues apart from the 7 defaults and from each other
    "pink": ((255, 130, 190), ("pink",)), "brown": ((140, 80, 30), ("brown",)),
    "teal": ((0, 140, 140), ("teal",)), "cyan": ((40, 230, 240), ("cyan",)),
    "magenta": ((240, 40, 220), ("magenta",)), "lime": ((170, 255, 60), ("lime",)),
    "navy": ((30, 40, 150), ("navy",)), "olive": ((120, 120, 20), ("olive",)),
    "maroon": ((130, 10, 40), ("maroon",)), "turquoise": ((60, 220, 180), ("turquoise",)),
    "indigo": ((90, 30, 170), ("indigo",)), "salmon": ((250, 150, 120), ("salmon",)),
    "khaki": ((200, 190, 120), ("khaki",)), "lavender": ((190, 170, 250), ("lavender",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    COLOURS.update(EXTRA_COLOURS)  # in place: the scene sampler, captions and renderer all read this dict
    generate(args.out, SyntheticConfig())


if __name__ == "__main__":
    main()
