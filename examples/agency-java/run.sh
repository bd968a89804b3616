#!/usr/bin/env bash
# Compiles and runs Agency.java. Jars come from CLASSPATH if set, else from Debian's packages
# (apt-get install librabbitmq-client-java libavro-java); with Maven use pom.xml instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${CLASSPATH:-}" ]; then
  jars=(/usr/share/java/amqp-client.jar /usr/share/java/avro.jar /usr/share/java/jackson-core-asl.jar
        /usr/share/java/jackson-mapper-asl.jar /usr/share/java/slf4j-api.jar /usr/share/java/slf4j-nop.jar
        /usr/share/java/avro-guava-dependencies.jar)
  for j in "${jars[@]}"; do
    [ -e "$j" ] || { echo "missing $j: apt-get install librabbitmq-client-java libavro-java libslf4j-java, or set CLASSPATH" >&2; exit 2; }
  done
  CLASSPATH=$(IFS=:; echo "${jars[*]}")
fi
out=${AGENCY_JAVA_BUILD:-$here/build}
mkdir -p "$out"
if [ ! -e "$out/Agency.class" ] || [ "$here/Agency.java" -nt "$out/Agency.class" ]; then
  javac -nowarn -cp "$CLASSPATH" -d "$out" "$here/Agency.java"
fi
exec java -cp "$out:$CLASSPATH" Agency "$@"
