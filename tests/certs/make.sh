#!/bin/sh
# Regenerates the test certificates (only for the tests: the keys are public): a CA, a server
# certificate for localhost / 127.0.0.1 / ::1 signed by it, a client certificate signed by it, the
# server key encrypted with the password "secret", and a self-signed certificate no CA vouches for.
set -e
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days $days -subj "/CN=fastcluster test CA"
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days $days -extfile server.ext
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=fastcluster test client"
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days $days
openssl pkey -in server.key -aes256 -passout pass:secret -out server-encrypted.key
openssl req -x509 -newkey rsa:2048 -nodes -keyout stranger.key -out stranger.pem -days $days -subj "/CN=stranger"
rm -f server.csr client.csr server.ext ca.srl ca.key   # (the CA signs nothing more)
