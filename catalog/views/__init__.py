"""Web pages: public browsing (`pages`), sign-up (`accounts`) and the seller's pages (`seller`).

Views call selectors and services; they never import the model.
"""

from catalog.views import accounts, pages, seller

__all__ = ["accounts", "pages", "seller"]
