# Sourced by the GPU-call scripts (after preamble.sh) that A/B a module switch over point 2's rows.
# Point 2's rows with a module switch at two values, alternated over two rounds, appended to $OUT/$1.txt under
# "--- round R, $2=V" headers: $1 the file's stem, $2 the label, $3 the python statement with VALUE for the value,
# $4 and $5 the values, $6 --step-archs.
ab_rounds() {
    AB_STATEMENT=$3
    ab_loop "$1" "$2" "$4" "$5" "$6" ab_run_statement
}
ab_run_statement() {  # one bench run with the module switch at value $1, architectures $2
    timeout 100 bash -c "bench '${AB_STATEMENT//VALUE/$1}' $OUT/step.txt --train-steps-only --step-archs $2 --reps 10"
}
# The two rounds of two values: $1 the file's stem, $2 the label, $3 and $4 the values, $5 --step-archs, $6 the
# function that runs one value's bench into $OUT/step.txt (arguments: the value, the architectures).
ab_loop() {
    local stem=$1 label=$2 archs=$5 run=$6 value
    for round in 1 2; do
        for value in "$3" "$4"; do
            echo "--- round $round, $label=$value" >> $OUT/$stem.txt
            $run "$value" "$archs"
            cat $OUT/step.txt >> $OUT/$stem.txt
            echo "round $round, $label=$value: $(grep -E "checks:" $OUT/step.txt)"
            grep -E "FAIL" $OUT/step.txt | head -3
            grep -A5 "== train step 4x512" $OUT/step.txt | tail -4
        done
    done
    rm -f $OUT/step.txt
}
# $3 when every graphed step of sensors $4 and architectures $5 (space-separated) in $OUT/$1.txt (ab_rounds' file)
# was faster with the value $3 than with $2 in both rounds, else $2.
faster() {
    awk -v old="$2" -v new="$3" -v sensors="$4" -v archs="$5" '
        BEGIN {ns = split(sensors, S, " "); na = split(archs, A, " ")
               for (i in S) want_s[S[i]] = 1; for (i in A) want_a[A[i]] = 1}
        /^--- round/ {split($4, kv, "="); v = kv[2]; r = $3; sub(",", "", r)}
        ($1 in want_s) && ($2 in want_a) && !((r, v, $1, $2) in t) {t[r, v, $1, $2] = $6; n++}
        END {ok = (n == 2 * 2 * ns * na)
             for (r = 1; r <= 2; r++) for (i = 1; i <= ns; i++) for (j = 1; j <= na; j++)
                 if (t[r, new, S[i], A[j]] >= t[r, old, S[i], A[j]]) ok = 0
             print ok ? new : old}' $OUT/$1.txt
}
# ab_rounds with an environment variable instead of a module switch: $1 the file's stem, $2 the variable, $3 and
# $4 its values (single words: `faster` reads them back), $5 --step-archs.  E.g. KPNT_KERNELS_DIR, to A/B a build of
# other kernel sources.
ab_env_rounds() {
    AB_VAR=$2
    ab_loop "$1" "$2" "$3" "$4" "$5" ab_run_env
}
ab_run_env() {  # one bench run with the environment variable at value $1, architectures $2
    timeout 150 env "$AB_VAR=$1" bash -c "bench '' $OUT/step.txt --train-steps-only --step-archs $2 --reps 10"
}
