"""Writes of the catalogue: every view, command, admin action and task calls these.

One module per subdomain (`images`, `listings`, `decisions`, `registry`, `bulk/`, ...), imported
directly: `from catalog.services.images import image_add`. Functions are named
`<entity>_<action>` and take keyword-only arguments.
"""
