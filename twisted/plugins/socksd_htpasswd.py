"""
socksd's twisted.cred checker plugin: C{--auth htpasswd:PATH} (Apache's
htpasswd files; see L{socksd.htpasswd}), for C{twistd socksd} and any
program that uses C{strcred}.

There is deliberately no C{__init__.py} in C{twisted/plugins/}: this file
joins Twisted's own plugin namespace package.
"""

from socksd.htpasswd import HtpasswdCheckerFactory

htpasswdCheckerFactory = HtpasswdCheckerFactory()
