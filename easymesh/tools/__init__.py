"""The logic behind the command-line tools (meshtopic, meshservice, meshnode).

``easymesh.cli`` only parses arguments and calls in here; everything below works
on an ordinary, already connected :class:`easymesh.Node`, so it can be used (and
tested) from Python as well:

- ``session``: open the tool's node, turn mesh errors into a message and exit code.
- ``display``: how data is printed (pretty one-line or ``repr``); decoding raw messages.
- ``table``: plain aligned text tables.
- ``stats``: message rate and size statistics over a sliding window (``hz``, ``bw``).
- ``topics``, ``services``, ``nodes``: one function per subcommand.

The tools read the topology from the coordinator through their node
(``node.nodes()``) and leave their own node out of every listing.
"""
