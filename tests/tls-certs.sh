# Sourced by the DICOM TLS tests: tls_certs DIR makes, with the openssl command (RSA 2048,
# SHA-256, valid two days unless said otherwise):
#   ca.crt/ca.key        the test CA                 ca2.crt/ca2.key  another CA
#   srv, cli, orthanc    leaves signed by ca (serverAuth and clientAuth, IP 127.0.0.1)
#   srv2                 a second server leaf for the same key as srv (a renewal, new serial)
#   rogue                a leaf signed by ca2
#   exp                  a leaf signed by ca, valid only on 2020-01-01
# Each leaf is NAME.crt and NAME.key. Returns non-zero (openssl's output in DIR/openssl.log)
# when a step fails.
tls_certs() {
    local d=$1
    mkdir -p "$d/db" || return 1
    (
        cd "$d" || exit 1
        exec >>openssl.log 2>&1 </dev/null
        set -e
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
            extendedKeyUsage=serverAuth,clientAuth subjectAltName=IP:127.0.0.1,DNS:localhost \
            >leaf.ext
        ca() { # NAME SUBJECT
            openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "$2" \
                -keyout "$1.key" -out "$1.crt" -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign
        }
        leaf() { # NAME CA SERIAL [KEY]
            if [ -n "${4:-}" ]; then
                openssl req -new -key "$4" -subj "/CN=$1" -out "$1.csr"
                cp "$4" "$1.key"
            else
                openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" \
                    -out "$1.csr"
            fi
            openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -set_serial "$3" \
                -days 2 -sha256 -extfile leaf.ext -out "$1.crt"
        }
        ca ca "/CN=mmsegd test CA"
        ca ca2 "/CN=other test CA"
        leaf srv ca 0x1001
        leaf cli ca 0x1002
        leaf orthanc ca 0x1003
        leaf srv2 ca 0x1004 srv.key
        leaf rogue ca2 0x2001
        # `x509 -days -1` gives a certificate whose end is before its start; `openssl ca`
        # sets both dates
        : >db/index.txt
        echo 3001 >db/serial
        cat >ca.cnf <<CNF
[ca]
default_ca = t
[t]
dir = .
database = db/index.txt
serial = db/serial
new_certs_dir = db
certificate = ca.crt
private_key = ca.key
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
CNF
        openssl req -new -newkey rsa:2048 -nodes -subj /CN=expired -keyout exp.key -out exp.csr
        openssl ca -batch -notext -config ca.cnf -extensions leaf -startdate 20200101000000Z \
            -enddate 20200102000000Z -in exp.csr -out exp.crt
    )
}
