"""Running the node: ``backup`` and restore, ``verify`` (index against store),
``retention`` (purging old images, trimming the change feed) and ``demo``
(the demo data set).
"""
