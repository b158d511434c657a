"""Running evaluations: config → task → requests → cached backend answers → records → metrics; rescoring stored
outputs; serving a loaded model over HTTP."""
