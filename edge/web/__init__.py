"""The live view in the browser (``edge-run --web [HOST:]PORT``; docs/live-view.md).

``config`` (the ``[web]`` section), ``overlay`` (the newest frame with the lanes, tiles,
vegetation outline, labels, sprays and valves drawn on it), ``hub`` (what the loop hands
over after each frame, newest wins; the encoder thread; the stream clients; the events),
``system`` (CPU temperature, load, disk), ``server`` (the Flask app and its HTTP server;
imported only when the live view is on: Flask is the optional ``web`` extra). No stage
imports this package; ``edge.app.live`` wires it.
"""
