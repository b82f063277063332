/* dicom/tls: loading DICOM TLS contexts from certificates that the test makes with the
 * openssl command: a CA, a server certificate it signs, a key that belongs to another
 * certificate, an encrypted key, an expired certificate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "dicom/tls.h"
#include "tests/tap.h"

static char dir[] = "/tmp/test-tls.XXXXXX";

/* Run a shell command in dir with openssl's output hidden; 0 when it succeeded. */
static int
sh(const char *cmd)
{
    char line[2048];
    snprintf(line, sizeof line, "cd %s && (%s) >>openssl.log 2>&1 </dev/null", dir, cmd);
    return system(line);
}

static const char *
in_dir(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

/* Load role from the three files in dir; returns the code, the context freed. */
static int
load(enum mms_tls_role role, const char *cert, const char *key, const char *ca, char *why,
     size_t why_len)
{
    char c[256], k[256], a[256];
    struct mms_tls_files f = {in_dir(c, sizeof c, cert), in_dir(k, sizeof k, key),
                              in_dir(a, sizeof a, ca)};
    struct mms_tls *t = NULL;
    int rc = mms_tls_load(role, &f, &t, why, why_len);
    mms_tls_unref(t);
    return rc;
}

int
main(void)
{
    if (system("openssl version >/dev/null 2>&1") != 0)
        skip_all("the openssl command is not installed");
    if (mkdtemp(dir) == NULL)
        skip_all("mkdtemp failed");
    plan(9, 120);
    int made =
        sh("openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj '/CN=mmsegd test CA' "
           "-keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE") == 0 &&
        sh("openssl req -new -newkey rsa:2048 -nodes -subj '/CN=mmsegd test server' "
           "-keyout srv.key -out srv.csr") == 0 &&
        sh("openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -set_serial 0x1001 -days 2 "
           "-sha256 -out srv.crt") == 0 &&
        sh("openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -set_serial 0x1002 -days -1 "
           "-sha256 -out old.crt") == 0 &&
        sh("openssl genrsa -out other.key 2048") == 0 &&
        sh("openssl rsa -in srv.key -aes256 -passout pass:secret -out locked.key") == 0;
    if (!ok(made, "openssl made a CA, a server certificate and the bad variants")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "sed 's/^/# /' %s/openssl.log | tail -20", dir);
        (void)!system(cmd);
    }

    char why[512];
    char c[256], k[256], a[256];
    struct mms_tls_files f = {in_dir(c, sizeof c, "srv.crt"), in_dir(k, sizeof k, "srv.key"),
                              in_dir(a, sizeof a, "ca.crt")};
    struct mms_tls *t = NULL;
    int rc = mms_tls_load(MMS_TLS_SERVER, &f, &t, why, sizeof why);
    char desc[512] = "";
    if (rc == 0)
        mms_tls_describe(t, desc, sizeof desc);
    ok(rc == 0 && strstr(desc, "CN=mmsegd test server") != NULL &&
           strstr(desc, "serial 1001") != NULL,
       "a server context loads: %s", rc == 0 ? desc : why);
    long long left = rc == 0 ? mms_tls_seconds_left(t) : 0;
    ok(left > 86400 && left <= 2 * 86400 + 60, "its certificate has 1 to 2 days left (%lld s)",
       left);
    struct mms_tls *t2 = mms_tls_ref(t);
    mms_tls_unref(t);
    ok(t2 == t && mms_tls_seconds_left(t2) == left, "a second reference outlives the first");
    mms_tls_unref(t2);

    rc = load(MMS_TLS_CLIENT, "srv.crt", "srv.key", "ca.crt", why, sizeof why);
    is_int(rc, 0, "a client context loads from the same files");

    rc = load(MMS_TLS_SERVER, "srv.crt", "other.key", "ca.crt", why, sizeof why);
    ok(rc == MMS_EINVAL && strstr(why, "does not match") != NULL,
       "a key of another certificate is refused: %s", why);
    rc = load(MMS_TLS_SERVER, "srv.crt", "locked.key", "ca.crt", why, sizeof why);
    ok(rc == MMS_EINVAL && strstr(why, "tls_key") != NULL,
       "an encrypted key is refused, without asking for a password: %s", why);
    rc = load(MMS_TLS_SERVER, "old.crt", "srv.key", "ca.crt", why, sizeof why);
    ok(rc == MMS_EINVAL && strstr(why, "expired") != NULL, "an expired certificate is refused: %s",
       why);
    rc = load(MMS_TLS_SERVER, "srv.crt", "srv.key", "no-such-ca.crt", why, sizeof why);
    ok(rc == MMS_EINVAL && strstr(why, "tls_ca") != NULL, "a missing tls_ca is refused: %s", why);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
    return done_testing();
}
