"""The machinery of one run: assemble the experiment once (:mod:`.assemble`), drive its rounds
(:mod:`.loop`) with hooks (:mod:`.hooks`), and write the run directory (:mod:`.execute`)."""
