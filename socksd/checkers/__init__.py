"""
twisted.cred checkers for the identity systems teams already run, each a
strcred plugin (C{--auth pam}, C{--auth ldap:...}, C{--auth radius:...};
see docs/auth.rst), and RADIUS accounting:

  - L{socksd.checkers.pam}: PAM (python-pam), in a bounded thread pool;
  - L{socksd.checkers.ldap}: a simple bind as the user (ldap3), in a
    bounded thread pool;
  - L{socksd.checkers.radius}: RADIUS PAP with Message-Authenticator, and
    accounting (Start, Interim-Update, Stop), over Twisted's UDP with
    pyrad as the packet codec.

Their Python packages are optional extras (C{socksd[pam]},
C{socksd[ldap]}, C{socksd[radius]}); a missing one is a usage error naming
the extra.
"""

from __future__ import annotations

__all__ = ["splitArguments", "number", "Attempt", "ThreadPoolChecker"]

from socksd.checkers._common import Attempt, ThreadPoolChecker, number, splitArguments
