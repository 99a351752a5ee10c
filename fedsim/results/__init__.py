"""Reading and writing results: run directories (:mod:`.rundir`) and sweep folders (:mod:`.sweepdir`)."""
