"""Our own implementations of the published separation networks.

Each module is one network (or the layers several share): tensors in, tensors out. Model
code never touches files, network or terminal; a family's adapter (``stemsplit/families``)
builds a network from its checkpoint and tells the engine how to run it.
"""
