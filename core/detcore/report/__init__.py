"""What a run leaves for people to look at rather than read: the numbers behind the plots
(:mod:`.curves`), the PNGs in ``WORK_DIR/plots`` (:mod:`.plots`, matplotlib, optional), and the
HTML page of ``detcore report`` comparing runs side by side (:mod:`.html`)."""
