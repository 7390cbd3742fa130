# Boost fragment: bf16 autocast (no loss scaling). Fast on GPUs with bf16 units
# and CPUs with AMX; ~15x slower than fp32 on AVX2-only CPUs.
bevboost_boosts = dict(amp=dict(dtype='bfloat16'))
