#!/bin/bash
# Session 42's diagnostic of the front MLP backward under Nsight Compute. s40_one.sh's front_ncu part made no
# report in session 42 (ncu exited 0: its regex "mlp_bwd_wgmma_kernel.*Cfg<32, 64, 32, 4" matched no launch).
#   names  the MLP backward launches of one eager X-Trans step as ncu names them ($OUT/names.txt)
#   front  the front level's MLP backward of the second eager step, Bayer and X-Trans (the backward's first MLP
#          launch, the front level being the forward's last; then the colour levels' 4), by a plain regex and a
#          launch count instead of the template arguments
#   spread the same for X-Trans with front_level.UNEVEN_CLASSES_SPREAD = 4: the front part showed X-Trans's SMs
#          unequally busy (max +24 %, min -62 % of the mean active cycles; the mean as Bayer's), as 4 : 1 : 4 classes
#          in one wave of 44 blocks each would make them; session 39 found spread 4 gained only ~1 %: why
PARTS=${PARTS:-names front}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    names)
        PYTHONPATH=$PWD timeout 120 ncu --kernel-name-base demangled --kernel-name regex:mlp_bwd --launch-count 5 \
            --section LaunchStats python tools/step_run.py --arch shipped --sensor xtrans --steps 1 > $OUT/names.txt 2>&1
        grep -E "mlp_bwd|==(WARNING|ERROR)" $OUT/names.txt | cut -c1-200 | head -8 ;;
    front)
        for sensor in bayer xtrans; do
            profile_one "mlp_bwd_wgmma_kernel" "python tools/step_run.py --arch shipped --sensor $sensor --steps 2" 5 \
                front_bwd_$sensor
        done ;;
    spread)
        profile_one "mlp_bwd_wgmma_kernel" \
            "python tools/step_run.py --arch shipped --sensor xtrans --steps 2 --set f.UNEVEN_CLASSES_SPREAD=4" 5 \
            front_bwd_xtrans_spread4
        grep -E "SM Active Cycles|Grid Size|instance value" $OUT/front_bwd_xtrans_spread4.txt | sort -u | head -8 ;;
    esac
done
echo "=== done $(date +%T)"
