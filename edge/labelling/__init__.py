"""Labelling saved frames tile by tile into a training data set (docs/labelling.md).

``config`` (the ``[labelling]`` section), ``store`` (the saved frames and their sidecars read
back; labels written as the folder-per-class data set ``weed-train train --data`` reads, with
its ``groups.csv`` and ``roles.csv``). Imports ``core``, ``service`` (the sidecar format) and
``inference`` (the bundle's manifest: its labels and their roles); never Flask (the pages are
``edge.web.labelling``) nor TensorFlow, and no stage of the run imports it.
"""
