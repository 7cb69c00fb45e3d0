"""The sans-IO protocol layer: frames, messages, codecs, auth and topology.

Nothing here touches a socket, a selector, a thread or a clock.
"""
