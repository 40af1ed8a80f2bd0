"""
Interop tests that live beside the features they check (chaining through
microsocks, curl through HTTP CONNECT, python-socks over TLS), gathered
here so that C{tox -e interop} runs them.
"""

from socksd.test.test_chain import MicrosocksChainTests
from socksd.test.test_httpconnect import CurlHttpConnectTests
from socksd.test.test_listen import PythonSocksTLSTests

__all__ = ["MicrosocksChainTests", "CurlHttpConnectTests", "PythonSocksTLSTests"]
