"""How the persona's replies are sampled unless a flag or request says otherwise: the one definition behind
GenerationSettings, chat's and discord's options, serve's request defaults and eval's sampling.

No imports: the CLI reads these to print its option defaults without loading torch. Measured against the
twin detector in BENCHMARKS.md ("Would your friends notice?"); change a default here, nowhere else.
"""

TEMPERATURE = 0.7
TOP_P = 0.9
REPETITION_PENALTY = 1.1
MAX_NEW_TOKENS = 128  # chat, discord and serve: the longest reply

# eval caps its replies shorter, deliberately: the people it compares against write short replies (the
# bundled sample's: 35 characters, about 10 tokens), so 48 tokens still hold a long reply while bounding the
# generation eval does for 128 contexts twice (base and adapter); a twin that runs on is still seen by the
# detector, as a long reply.
EVAL_MAX_NEW_TOKENS = 48
