"""Storyboards from scripts: a Fountain screenplay or a YAML shot list in; a shot list, boards,
per-shot clips and an animatic out (`build.make_storyboard`, the ``videogen storyboard`` command)."""
