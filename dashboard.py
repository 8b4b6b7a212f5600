"""What ``make run`` serves: the dashboard of ``app.py`` as Streamlit's ASGI app, with the page
addresses fixed up (``core.webapp``). ``streamlit run dashboard.py`` finds ``app`` below."""

from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware

from core.webapp import PinBaseUrl

app = st.App("app.py", middleware=[Middleware(PinBaseUrl)])
