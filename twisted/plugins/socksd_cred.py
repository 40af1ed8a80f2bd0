"""
socksd's strcred checkers: C{--auth pam[:service=NAME]}, C{--auth
ldap:...} and C{--auth radius:...} (see docs/auth.rst).

There is deliberately no C{__init__.py} in C{twisted/plugins/}: this file
joins Twisted's own plugin namespace package.
"""

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer


class _Factory:
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring=""):
        missing = self.missing()
        if missing:
            raise ValueError(missing)
        return self.build(argstring)


@implementer(ICheckerFactory, IPlugin)
class PamCheckerFactory(_Factory):
    authType = "pam"
    authHelp = (
        "PAM (python-pam): pam[:service=NAME] checks with the PAM service "
        "NAME (default socksd, /etc/pam.d/socksd), in a thread pool."
    )
    argStringFormat = "[service=NAME][:threads=N]"

    def missing(self):
        from socksd.checkers.pam import pamMissing

        return pamMissing()

    def build(self, argstring):
        from socksd.checkers.pam import PamChecker

        return PamChecker.fromArguments(argstring)


@implementer(ICheckerFactory, IPlugin)
class LdapCheckerFactory(_Factory):
    authType = "ldap"
    authHelp = (
        "LDAP (ldap3): a simple bind as the user, by a DN template or a "
        "search with a service account; StartTLS or LDAPS."
    )
    argStringFormat = (
        "host=HOST[:port=N][:tls=no|starttls|ldaps][:ca=PATH]"
        "(:userdn=TEMPLATE|:base=DN:filter=F:binddn=DN:bindpw-file=PATH)"
        "[:timeout=S][:pool=N]"
    )

    def missing(self):
        from socksd.checkers.ldap import ldapMissing

        return ldapMissing()

    def build(self, argstring):
        from socksd.checkers.ldap import LdapChecker

        return LdapChecker.fromArguments(argstring)


@implementer(ICheckerFactory, IPlugin)
class RadiusCheckerFactory(_Factory):
    authType = "radius"
    authHelp = (
        "RADIUS (pyrad codec over Twisted UDP): PAP with "
        "Message-Authenticator, retransmits and failover."
    )
    argStringFormat = (
        "server=HOST[,HOST...]:secret-file=PATH[:port=1812][:timeout=S]"
        "[:retries=N][:nas-id=NAME]"
    )

    def missing(self):
        from socksd.checkers.radius import radiusMissing

        return radiusMissing()

    def build(self, argstring):
        from twisted.internet import reactor

        from socksd.checkers.radius import RadiusChecker, RadiusClient, radiusSettings

        return RadiusChecker(RadiusClient(reactor, radiusSettings(argstring, 1812)))


pamCheckerFactory = PamCheckerFactory()
ldapCheckerFactory = LdapCheckerFactory()
radiusCheckerFactory = RadiusCheckerFactory()
