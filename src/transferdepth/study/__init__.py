"""The study: several trainings compared on equal terms (`transferdepth compare`).

    compare.py  variants x seeds -> runs (finished ones reused), evaluation, tables with intervals and
                paired differences, the HTML study report

May import: training, evaluation, inference, models, data, weights and the root conventions.
"""
