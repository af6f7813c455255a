#!/bin/bash
# Session 44's validation on today's defaults (the warp-specialized weight gradient on, and whatever s44_two.sh's
# A/Bs switched on): s42_two.sh's parts (every CUDA test, memcheck over the weight gradient's tests (every form now),
# graphed parity, the full bench) under session 43's longer limits.  About 6 minutes.
MEMCHECK_S=${MEMCHECK_S:-150} FULL_S=${FULL_S:-250} exec bash "$(dirname "$0")/s42_two.sh"
