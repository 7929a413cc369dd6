#!/usr/bin/env python3
"""Make the two fonts `wsingest dashboards render` compiles in.

DejaVu Sans (Debian's fonts-dejavu-core), subset to Latin-1, general
punctuation, arrows and a few math signs: about 20 KB each instead of 700.

plotters 0.3.7 draws an ab_glyph glyph with its ink box at the pen
position, ignoring the left side bearing, so "15:30" comes out "15: 30".
Each outline glyph gets a one-point contour at (0, 0), which draws nothing
but starts the ink box at the pen, so glyphs land where the font means them.

Needs fonttools (pip install fonttools). Run from this folder:
    python3 make-fonts.py
"""
import subprocess

from fontTools.ttLib import TTFont
from fontTools.ttLib.tables._g_l_y_f import GlyphCoordinates

UNICODES = ("U+0020-007E,U+00A0-00FF,U+2010-2027,U+2030-203A,U+2190-2193,"
            "U+2212,U+2264,U+2265,U+221E,U+03BC")

for name in ("DejaVuSans", "DejaVuSans-Bold"):
    out = f"{name}-subset.ttf"
    subprocess.run(["pyftsubset", f"/usr/share/fonts/truetype/dejavu/{name}.ttf",
                    f"--unicodes={UNICODES}", "--layout-features=", "--no-hinting",
                    f"--output-file={out}"], check=True)
    font = TTFont(out)
    glyf = font["glyf"]
    for g in glyf.glyphs.values():
        g.expand(glyf)
        if g.numberOfContours > 0:
            coords = list(g.coordinates) + [(0, 0)]
            g.coordinates = GlyphCoordinates(coords)
            g.flags.append(1)  # on curve
            g.endPtsOfContours.append(len(coords) - 1)
            g.numberOfContours += 1
            g.recalcBounds(glyf)
    font.save(out)
    print(out)
