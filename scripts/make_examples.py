"""Draw the example images and save them as the PNGs shipped in integrations/examples/
(``vtcompress.integrations.examples``).

    python scripts/make_examples.py

Run it after changing a drawing in vtcompress/integrations/demo/examples.py (integrations/ in
the repository); commit the PNGs it writes.
"""

from __future__ import annotations

from pathlib import Path

from vtcompress.integrations.demo.examples import write_examples

TARGET = Path(__file__).resolve().parents[1] / "integrations" / "examples"

if __name__ == "__main__":
    for path, question in write_examples(TARGET):
        print(f"{path}  ({Path(path).stat().st_size} bytes)  {question}")
