"""Which words carry no content: one list for the lexicon's vocabulary (models/unify.py) and the keyword slices
(metrics.py), so a word the lexicon never activates is also a word no slice is named after."""

# A small English stop-word list: function words name no visual concept, so they never get a lexicon dimension.
# Direction words (up, down, left, ...) are kept: in video they are motion concepts. Order and count words (first,
# then, one) are dropped: a bag of words cannot say which event came first, so that is left to the latent branch.
STOP_WORDS = frozenset("""
a an the and or but if than so of on in at to from by with without into onto for is are was were be been being am
do does did doing has have had having it its this that these those there here as while when where which who whom
whose what why how all any both each few more most other some such no nor not only own same too very can will just
should now i me my we our you your he him his she her they them their one first then after before again once also
""".split())

# Caption boilerplate ("a video of ...", "footage showing ..."): words about the medium, not its content. Slices skip
# them; the lexicon keeps them (its vocabulary is fixed by the bundled checkpoints).
CAPTION_BOILERPLATE = frozenset("video clip footage shown showing shows".split())
