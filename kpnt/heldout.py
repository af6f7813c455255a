"""Cameras the shipped weights never train on (issue 13): the quality
benchmark's (Nikon D750, Fujifilm X-T1) and one more of each sensor kind,
used for validation only.  The training tools hold them out and the
validation tools score on them; no imports, so launchers stay light."""

#: Held-out camera names ('MAKE MODEL', as in darktable's noise table) per sensor kind.
HELD_OUT_CAMERAS = {
    "bayer": ("Nikon D750", "Sony ILCE-7M2"),
    "xtrans": ("Fujifilm X-T1", "Fujifilm X-E2"),
}
#: All of them, Bayer first.
ALL_HELD_OUT = tuple(name for names in HELD_OUT_CAMERAS.values() for name in names)
