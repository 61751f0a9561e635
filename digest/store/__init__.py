"""Every query digest runs, in one package: one module per aggregate.

Commands, the web app and the send loop call these functions; none of them builds SQL.
"""
