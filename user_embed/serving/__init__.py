"""HTTP serving of personalized answers: an OpenAI-compatible API over a PersonalizedLM and live user histories.

>>> from user_embed.serving import create_app, LiveUsers              # doctest: +SKIP
>>> lm = PersonalizedLM.from_pretrained("runs/quickstart/embedder")    # doctest: +SKIP
>>> app = create_app(lm, LiveUsers.from_folder("data/ml-100k", lm.embedder.spec))  # doctest: +SKIP

``user-embed serve --checkpoint DIR --data DIR`` runs it with uvicorn (see ``docs/serving.md``). This
package imports FastAPI; ``import user_embed`` never imports it.
"""

from __future__ import annotations

from user_embed.serving.app import create_app
from user_embed.serving.live_users import LiveUsers
from user_embed.serving.settings import ServeSettings

__all__ = ["LiveUsers", "ServeSettings", "create_app"]
