"""CFA model: site classes, canonical transforms, crops and flips."""
import numpy as np
import pytest

from kpnt.mosaic import BAYER_PHASES, CFA, CFAError, D4

R, G, B = 0, 1, 2
TAPS_7x7 = np.array([(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)])


def canonical_layout(cfa, y, x, taps=TAPS_7x7):
    """Colours of the canonical taps of site (y, x), R/B swapped back."""
    off = cfa.canonical_offsets(taps)[y % cfa.period, x % cfa.period]
    col = cfa.colour_at(y + off[:, 0], x + off[:, 1])
    if cfa.swap_rb[y % cfa.period, x % cfa.period]:
        col = np.where(col == R, B, np.where(col == B, R, col))
    return col


def test_bayer_rggb_hand_table():
    cfa = CFA.bayer("RGGB")
    assert cfa.pattern.tolist() == [[R, G], [G, B]]
    # classes: green 0, red/blue 1
    assert cfa.site_class.tolist() == [[1, 0], [0, 1]]
    # green on the red row is canonical (identity), green on the blue row is its transpose
    assert D4[cfa.transform[0, 1]].tolist() == [[1, 0], [0, 1]]
    assert D4[cfa.transform[1, 0]].tolist() == [[0, 1], [1, 0]]
    # red is canonical, blue is the same layout with R and B swapped
    assert cfa.transform[0, 0] == 0 and cfa.transform[1, 1] == 0
    assert cfa.swap_rb.tolist() == [[False, False], [False, True]]
    assert cfa.base_counts.tolist() == [1, 2, 1]
    assert cfa.block == 2 and cfa.block_phase == (0, 0)


def test_xtrans_hand_table():
    cfa = CFA.xtrans()
    # Corners and centre of the 3x3 blocks starting at (1, 1) are green.
    assert cfa.block_phase == (1, 1)
    c, m, s = 0, 1, 2  # corner green, centre green, side red/blue
    expected = [
        [c, c, s, c, c, s],
        [c, c, s, c, c, s],
        [s, s, m, s, s, m],
        [c, c, s, c, c, s],
        [c, c, s, c, c, s],
        [s, s, m, s, s, m],
    ]
    assert cfa.site_class.tolist() == expected
    assert cfa.base_counts.tolist() == [2, 5, 2]
    # the four centre greens: two see the canonical layout as is, the other
    # two its transpose (exact, no red/blue swap needed)
    centre = [(int(cfa.transform[y, x]), bool(cfa.swap_rb[y, x])) for y, x in zip(*np.nonzero(cfa.site_class == 1))]
    assert sorted(centre) == [(0, False), (0, False), (1, False), (1, False)]


@pytest.mark.parametrize("phase", BAYER_PHASES)
def test_bayer_invariance(phase):
    cfa = CFA.bayer(phase)
    for cls in range(cfa.n_classes):
        sites = list(zip(*np.nonzero(cfa.site_class == cls)))
        layouts = [canonical_layout(cfa, y, x) for y, x in sites]
        assert all(np.array_equal(layouts[0], l) for l in layouts)
    # greens are exact transposes (no swap); the red and blue sites swap
    greens = list(zip(*np.nonzero(cfa.pattern == G)))
    assert not any(cfa.swap_rb[y, x] for y, x in greens)
    assert sorted(D4[cfa.transform[y, x]].tolist() for y, x in greens) == sorted([[[0, 1], [1, 0]], [[1, 0], [0, 1]]])
    rb = [cfa.swap_rb[y, x] for y, x in zip(*np.nonzero(cfa.pattern != G))]
    assert sorted(rb) == [False, True]


@pytest.mark.parametrize("dy,dx", [(0, 0), (1, 2), (3, 3), (5, 4)])
def test_xtrans_invariance_all_36_sites(dy, dx):
    cfa = CFA.xtrans(dy, dx)
    counts = {cls: int((cfa.site_class == cls).sum()) for cls in range(3)}
    assert counts == {0: 16, 1: 4, 2: 16}
    for cls in range(3):
        sites = list(zip(*np.nonzero(cfa.site_class == cls)))
        layouts = [canonical_layout(cfa, y, x) for y, x in sites]
        for l in layouts:
            np.testing.assert_array_equal(l, layouts[0])
        # green layout identical even before undoing the swap
        raw = [cfa.canonical_offsets(TAPS_7x7)[y, x] for y, x in sites]
        greens = [cfa.colour_at(y + o[:, 0], x + o[:, 1]) == G for (y, x), o in zip(sites, raw)]
        assert all(np.array_equal(greens[0], g) for g in greens)
    # the centre green of a block and its corners are green, the sides not
    assert (cfa.pattern[cfa.site_class != 2] == G).all()
    assert (cfa.pattern[cfa.site_class == 2] != G).all()


def test_canonical_offsets_broken_if_transform_ignored():
    """The invariance above is not vacuous: without transforms it fails."""
    cfa = CFA.xtrans()
    sites = list(zip(*np.nonzero(cfa.site_class == 0)))
    plain = [cfa.colour_at(y + TAPS_7x7[:, 0], x + TAPS_7x7[:, 1]) == G for y, x in sites]
    assert not all(np.array_equal(plain[0], p) for p in plain)


@pytest.mark.parametrize("phase", BAYER_PHASES)
def test_crop_flip_rederive_bayer(phase):
    cfa = CFA.bayer(phase)
    H, W = 7, 10
    cmap = cfa.colour_map(H, W)
    assert np.array_equal(cfa.crop(1, 0).colour_map(H - 1, W), cmap[1:, :])
    assert np.array_equal(cfa.flip(0, H).colour_map(H, W), cmap[::-1, :])
    assert np.array_equal(cfa.flip(1, W).colour_map(H, W), cmap[:, ::-1])
    assert np.array_equal(cfa.transpose().colour_map(W, H), cmap.T)


def test_crop_flip_rederive_xtrans():
    cfa = CFA.xtrans(2, 1)
    H, W = 13, 17
    cmap = cfa.colour_map(H, W)
    for y0, x0 in [(1, 0), (0, 5), (4, 3)]:
        assert np.array_equal(cfa.crop(y0, x0).colour_map(H - y0, W - x0), cmap[y0:, x0:])
    assert np.array_equal(cfa.flip(0, H).colour_map(H, W), cmap[::-1, :])
    assert np.array_equal(cfa.flip(1, W).colour_map(H, W), cmap[:, ::-1])
    assert cfa.flip(1, W).kind == "xtrans"


def test_from_rawpy_maps_second_green():
    cfa = CFA.from_rawpy(np.array([[0, 1], [3, 2]]), b"RGBG")
    assert cfa.name == "RGGB"
    big = CFA.from_pattern(np.tile(CFA.xtrans().pattern, (2, 2)))
    assert big == CFA.xtrans()


@pytest.mark.parametrize(
    "pattern",
    [
        [[0, 0], [1, 2]],                      # two reds
        [[1, 0], [2, 0]],                      # greens not diagonal
        np.zeros((4, 4), int),                 # unsupported period
        np.tile([[0, 1], [1, 2]], (3, 3)) * 0 + 1,  # monochrome 6x6
    ],
)
def test_unsupported_patterns_raise(pattern):
    with pytest.raises(CFAError):
        CFA(np.asarray(pattern))


def test_unsupported_colour_letter():
    with pytest.raises(CFAError, match="unsupported colour filter"):
        CFA.from_rawpy(np.array([[0, 1], [2, 3]]), b"CMYG")


def test_json_round_trip():
    for cfa in [CFA.bayer("GBRG"), CFA.xtrans(3, 4)]:
        assert CFA.from_json(cfa.to_json()) == cfa


def test_canonical_layout_same_for_every_phase():
    """One weight set serves every crop: a class's canonical layout must not
    depend on the CFA phase (it would, if each phase chose its own frame)."""
    for kind, cfas in [("bayer", [CFA.bayer(p) for p in BAYER_PHASES]), ("xtrans", [CFA.xtrans(dy, dx) for dy in range(6) for dx in range(6)])]:
        ref = cfas[0]
        for cls in range(ref.n_classes):
            ys, xs = np.nonzero(ref.site_class == cls)
            want = canonical_layout(ref, ys[0], xs[0])
            for cfa in cfas[1:]:
                for yy, xx in zip(*np.nonzero(cfa.site_class == cls)):
                    np.testing.assert_array_equal(canonical_layout(cfa, yy, xx), want, err_msg=f"{kind} {cfa.name} site {(yy, xx)}")
