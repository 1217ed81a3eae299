"""Value types and constants shared by every layer: they import nothing else of Portico.

``net`` (client networks), ``http`` (the methods Portico relays, the authentication realm),
``paths`` (path templates, which the config validates and the gateway matches) and ``errors``
(the root of the exception hierarchy).
"""
