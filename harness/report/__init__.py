"""From runs to answers: loading a study's runs (:mod:`.loading`), statistics (:mod:`.stats`), figures
(:mod:`.plots`), the four questions (:mod:`.questions`) and the executed report notebook (:mod:`.notebook`).

``python -m harness.report EXPERIMENT`` builds a report (see :mod:`.notebook`).
"""
