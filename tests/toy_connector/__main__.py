import asyncio

from .connector import Connector

asyncio.run(Connector().serve())
