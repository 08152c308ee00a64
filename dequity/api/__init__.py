"""What users call: compute, update, reweight, load, list, rename and delete runs.

Each entry reads top to bottom: check the input, resolve the config once
(:mod:`dequity.config`), embed (:mod:`dequity.sources`), estimate
(:mod:`dequity.pipeline`) and write through the store (:mod:`dequity.store`).
"""
