"""Write digit images to try `digitcmp predict` on: MNIST test digits and font-rendered digits.

    python examples/make_digit_images.py [--out digits/] [--indices 0 1]

Writes t10k-<index>-<label>.png (an MNIST test digit, from the test split shipped with digitcmp,
enlarged 4x and inverted to dark ink on white, as a scan would look) and font-<digit>.png (the
digit rendered in Pillow's built-in font, black on white, off-centre on a larger canvas).
"""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from digitcmp.data.idx import read_idx
from digitcmp.data.sources import shipped_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="digits", help="(default: %(default)s)")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1],
                   help="which test digits (default: %(default)s)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = read_idx(shipped_dir() / "t10k-images-idx3-ubyte.gz")
    y = read_idx(shipped_dir() / "t10k-labels-idx1-ubyte.gz")
    for i in args.indices:
        big = Image.fromarray(255 - x[i]).resize((112, 112), Image.BICUBIC)
        big.save(out / f"t10k-{i}-{y[i]}.png")
    font = ImageFont.load_default(size=90)
    for digit in (3, 8):
        canvas = Image.new("L", (160, 130), 255)
        ImageDraw.Draw(canvas).text((30, 10), str(digit), fill=0, font=font)
        canvas.save(out / f"font-{digit}.png")
    print("\n".join(sorted(str(f) for f in out.iterdir())))


if __name__ == "__main__":
    main()
