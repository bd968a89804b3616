// govbus agency starter kit for Java: the RabbitMQ Java client and the Apache Avro Java library.
//
// Consumes your agency's queue with the account `govbus provision` gave you, verifies the
// platform's batch signature on every delivery (a salted leaf, its RFC 9162 inclusion path to the
// batch root, and the platform's Ed25519 signature over a statement naming your agency as the
// audience; JDK 15+ has Ed25519; DESIGN.md, "Batch signatures"), decodes the Avro
// single-object body with the writer schema named by its fingerprint (fetched once from the
// router's /schemas/{fingerprint}), prints the record as one JSON line, and acks. A delivery that
// does not verify or decode is rejected without requeue: RabbitMQ dead-letters it to
// agency.<id>.dlq. After a platform key rotation it trusts the new key once the key you were
// provisioned with endorsed it (read from the router's /keys): nothing to re-provision.
//
//   ./run.sh --env-file provisioned/agencies/civil.env
//
// Copy this file and replace handle() with your agency's work; the delivery is acked only after
// it returns. Any Avro 1.8+ and RabbitMQ client 5.x will do (see pom.xml for Maven).
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Address;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

public final class Agency {
  /** Why a delivery is dead-lettered. */
  static final class Refused extends Exception {
    Refused(String why) {
      super(why);
    }
  }

  static Map<String, String> readEnvFile(Path path) throws IOException {
    Map<String, String> env = new HashMap<>();
    for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
      line = line.trim();
      int eq = line.indexOf('=');
      if (!line.isEmpty() && !line.startsWith("#") && eq > 0) {
        env.put(line.substring(0, eq).trim(), line.substring(eq + 1).trim());
      }
    }
    return env;
  }

  /** An Ed25519 public key from its 32 raw bytes (X.509 prefix 302a300506032b6570032100). */
  static PublicKey ed25519(byte[] raw) throws Exception {
    byte[] prefix = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    byte[] der = new byte[prefix.length + raw.length];
    System.arraycopy(prefix, 0, der, 0, prefix.length);
    System.arraycopy(raw, 0, der, prefix.length, raw.length);
    return KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(der));
  }

  /** A trusted platform key: the key, its raw bytes, and the end of its validity (or null). */
  record Trusted(PublicKey key, byte[] raw, OffsetDateTime validUntil) {}

  static final String ENDORSEMENT_ID = "govbus-key-endorsement";

  final String routerUrl;
  final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  final Map<String, Schema> schemas = new ConcurrentHashMap<>();
  /**
   * The platform keys this agency trusts: the provisioned one, and each later key a trusted key
   * endorsed (read from the router's /keys at most every 10 s when a delivery names a key id it
   * does not know), so a platform key rotation needs no re-provisioning and a forged /keys
   * answer gains nothing. A key past its valid_until verifies nothing.
   */
  final Map<String, Trusted> keys = new ConcurrentHashMap<>();
  /** The provisioned key when the env file names no key id (older files). */
  volatile Trusted anonymous;
  volatile long learnedAt = 0;

  /** This agency's id: the audience its delivery batches are signed for. */
  final String agencyId;
  /** Statements already verified (key id, public key, statement, signature): the rest of a batch
   * costs its hashes only. A key past its valid_until is refused before this is consulted. */
  final java.util.Set<String> verified = ConcurrentHashMap.newKeySet();

  Agency(String agencyId, byte[] platformKey, String platformKeyId, String routerUrl)
      throws Exception {
    this.agencyId = agencyId;
    Trusted t = new Trusted(ed25519(platformKey), platformKey, null);
    if (platformKeyId != null && !platformKeyId.isEmpty()) {
      keys.put(platformKeyId, t);
    } else {
      anonymous = t;
    }
    this.routerUrl = routerUrl.replaceAll("/+$", "");
  }

  static byte[] signedBytes(String messageId, String item, String version, String op, byte[] body) {
    byte[] prefix = (messageId + "\n" + item + "\n" + version + "\n" + op + "\n")
        .getBytes(StandardCharsets.UTF_8);
    byte[] out = Arrays.copyOf(prefix, prefix.length + body.length);
    System.arraycopy(body, 0, out, prefix.length, body.length);
    return out;
  }

  static final int MAX_BATCH = 1024;
  static final Pattern BATCH = Pattern.compile("(0|[1-9][0-9]{0,4})/(0|[1-9][0-9]{0,4})");

  /** What a delivery's leaf covers: message_id LF item LF version LF op LF grant LF grant
   * revision LF body. */
  static byte[] deliveryBytes(String messageId, String item, String version, String op,
      String grant, String grantRevision, byte[] body) {
    return signedBytes(messageId, item, version, op + "\n" + grant + "\n" + grantRevision, body);
  }

  static byte[] sha256(byte[]... parts) throws Exception {
    MessageDigest d = MessageDigest.getInstance("SHA-256");
    for (byte[] p : parts) {
      d.update(p);
    }
    return d.digest();
  }

  /** Base64 in the standard alphabet with padding, decoded strictly. */
  static byte[] b64(String value, String name) throws Refused {
    if (value.length() % 4 != 0) {
      throw new Refused("malformed " + name);
    }
    try {
      return Base64.getDecoder().decode(value);
    } catch (IllegalArgumentException e) {
      throw new Refused("malformed " + name);
    }
  }

  /** The root a leaf at index of a tree of size leads to along path (RFC 9162 §2.1.3.2), or
   * null when the path is too short or too long. */
  static byte[] rootFromPath(long index, long size, byte[] leaf, List<byte[]> path)
      throws Exception {
    if (index >= size) {
      return null;
    }
    long fn = index;
    long sn = size - 1;
    byte[] r = leaf;
    byte[] one = {1};
    for (byte[] p : path) {
      if (sn == 0) {
        return null;
      }
      if ((fn & 1) == 1 || fn == sn) {
        r = sha256(one, p, r);
        if ((fn & 1) == 0) {
          while ((fn & 1) == 0 && fn != 0) {
            fn >>= 1;
            sn >>= 1;
          }
        }
      } else {
        r = sha256(one, r, p);
      }
      fn >>= 1;
      sn >>= 1;
    }
    return sn == 0 ? r : null;
  }

  /** The statement a delivery's batch signature must cover, rebuilt from its salt, leaf index,
   * tree size and path for this agency as the audience. */
  String batchStatement(Map<String, Object> h, String keyId, byte[] signed) throws Exception {
    byte[] salt = b64(header(h, "govbus-salt"), "govbus-salt");
    if (salt.length != 16) {
      throw new Refused("malformed govbus-salt");
    }
    Matcher m = BATCH.matcher(header(h, "govbus-batch"));
    if (!m.matches()) {
      throw new Refused("malformed govbus-batch");
    }
    long index = Long.parseLong(m.group(1));
    long size = Long.parseLong(m.group(2));
    if (size == 0 || size > MAX_BATCH) {
      throw new Refused("a batch of " + size + " messages");
    }
    byte[] raw = b64(header(h, "govbus-proof"), "govbus-proof");
    if (raw.length % 32 != 0) {
      throw new Refused("malformed govbus-proof");
    }
    List<byte[]> path = new ArrayList<>();
    for (int i = 0; i < raw.length; i += 32) {
      path.add(Arrays.copyOfRange(raw, i, i + 32));
    }
    byte[] root = rootFromPath(index, size, sha256(new byte[] {0}, salt, signed), path);
    if (root == null) {
      throw new Refused("an inclusion path of the wrong length");
    }
    return "govbus-batch-v1\n" + keyId + "\n" + agencyId + "\n" + size + "\n"
        + hex(root, 0, root.length);
  }

  static boolean verifies(PublicKey key, byte[] data, byte[] signature) throws Exception {
    Signature verifier = Signature.getInstance("Ed25519");
    verifier.initVerify(key);
    verifier.update(data);
    try {
      return verifier.verify(signature);
    } catch (java.security.SignatureException e) {
      return false;
    }
  }

  /** Reads /keys and trusts every key endorsed, link by link, by a key already trusted. */
  @SuppressWarnings("unchecked")
  synchronized void learnKeys() throws Exception {
    if (System.nanoTime() - learnedAt < 10_000_000_000L && learnedAt != 0) {
      return;
    }
    learnedAt = System.nanoTime();
    HttpRequest req = HttpRequest.newBuilder(URI.create(routerUrl + "/keys"))
        .timeout(Duration.ofSeconds(10)).build();
    HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() != 200) {
      throw new IOException("GET /keys answered " + resp.statusCode());
    }
    List<Object> listed = (List<Object>) ((Map<String, Object>) new Json(resp.body()).value()).get("keys");
    Base64.Decoder b64 = Base64.getDecoder();
    Trusted anon = anonymous;
    for (Object o : listed) {
      Map<String, Object> e = (Map<String, Object>) o;
      byte[] raw = b64.decode((String) e.get("public_key"));
      if (anon != null && Arrays.equals(raw, anon.raw())) {
        keys.put((String) e.get("key_id"), anon);
        anonymous = null;
        anon = null;
      }
      Trusted known = keys.get((String) e.get("key_id"));
      if (known != null && Arrays.equals(raw, known.raw())) {
        keys.put((String) e.get("key_id"), new Trusted(known.key(), raw, until(e)));
      }
    }
    boolean grew = true;
    while (grew) {
      grew = false;
      for (Object o : listed) {
        Map<String, Object> e = (Map<String, Object>) o;
        String id = (String) e.get("key_id");
        Map<String, Object> end = (Map<String, Object>) e.get("endorsement");
        if (keys.containsKey(id) || end == null || !id.equals(end.get("key_id"))
            || !e.get("public_key").equals(end.get("public_key"))) {
          continue;
        }
        Trusted endorser = keys.get((String) end.get("endorsed_by"));
        if (endorser == null) {
          continue;
        }
        byte[] raw = b64.decode((String) end.get("public_key"));
        if (verifies(endorser.key(), signedBytes(ENDORSEMENT_ID, id, "0", "upsert", raw),
            b64.decode((String) end.get("signature")))) {
          keys.put(id, new Trusted(ed25519(raw), raw, until(e)));
          grew = true;
        }
      }
    }
  }

  static OffsetDateTime until(Map<String, Object> listed) {
    Object u = listed.get("valid_until");
    return u == null ? null : OffsetDateTime.parse((String) u);
  }

  /** Throws Refused unless a trusted platform key in force signed data. */
  void verifyPlatform(String keyId, byte[] data, byte[] signature) throws Exception {
    if (keyId != null && !keys.containsKey(keyId)) {
      try {
        learnKeys();
      } catch (IOException e) {
        System.err.println("cannot read " + routerUrl + "/keys: " + e);
      }
    }
    Trusted t = keyId == null ? null : keys.get(keyId);
    if (t != null) {
      if (t.validUntil() != null && OffsetDateTime.now().isAfter(t.validUntil())) {
        throw new Refused("signed with platform key " + keyId + ", which expired at " + t.validUntil());
      }
      String seen = keyId + "\n" + Base64.getEncoder().encodeToString(t.raw()) + "\n"
          + new String(data, StandardCharsets.UTF_8) + "\n"
          + Base64.getEncoder().encodeToString(signature);
      if (verified.contains(seen)) {
        return;
      }
      if (!verifies(t.key(), data, signature)) {
        throw new Refused("the platform signature does not verify (the message was altered)");
      }
      if (verified.size() >= 16384) {
        verified.clear();
      }
      verified.add(seen);
      return;
    }
    Trusted anon = anonymous;
    if (anon != null && verifies(anon.key(), data, signature)) {
      return;
    }
    throw new Refused("the platform signature does not verify with a platform key this agency trusts (key id "
        + keyId + "): wrong platform key, an unendorsed key, or the message was altered");
  }

  /** Just enough JSON for /keys: objects, arrays, strings, numbers, true, false, null. */
  static final class Json {
    final String s;
    int i = 0;

    Json(String s) {
      this.s = s;
    }

    Object value() {
      skip();
      char c = s.charAt(i);
      if (c == '{') {
        Map<String, Object> m = new LinkedHashMap<>();
        i++;
        skip();
        if (s.charAt(i) == '}') {
          i++;
          return m;
        }
        while (true) {
          skip();
          String k = string();
          skip();
          i++; // ':'
          m.put(k, value());
          skip();
          if (s.charAt(i++) == '}') {
            return m;
          }
        }
      }
      if (c == '[') {
        List<Object> l = new ArrayList<>();
        i++;
        skip();
        if (s.charAt(i) == ']') {
          i++;
          return l;
        }
        while (true) {
          l.add(value());
          skip();
          if (s.charAt(i++) == ']') {
            return l;
          }
        }
      }
      if (c == '"') {
        return string();
      }
      int start = i;
      while (i < s.length() && ",}] \n\r\t".indexOf(s.charAt(i)) < 0) {
        i++;
      }
      String word = s.substring(start, i);
      return switch (word) {
        case "true" -> Boolean.TRUE;
        case "false" -> Boolean.FALSE;
        case "null" -> null;
        default -> Double.valueOf(word);
      };
    }

    String string() {
      StringBuilder sb = new StringBuilder();
      i++; // opening quote
      while (true) {
        char c = s.charAt(i++);
        if (c == '"') {
          return sb.toString();
        }
        if (c != '\\') {
          sb.append(c);
          continue;
        }
        char e = s.charAt(i++);
        switch (e) {
          case 'n' -> sb.append('\n');
          case 't' -> sb.append('\t');
          case 'r' -> sb.append('\r');
          case 'b' -> sb.append('\b');
          case 'f' -> sb.append('\f');
          case 'u' -> {
            sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
            i += 4;
          }
          default -> sb.append(e);
        }
      }
    }

    void skip() {
      while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
        i++;
      }
    }
  }

  /** The writer schema of a fingerprint, fetched once from the router. */
  Schema schema(String fingerprint) throws Exception {
    Schema s = schemas.get(fingerprint);
    if (s == null) {
      HttpRequest req = HttpRequest.newBuilder(URI.create(routerUrl + "/schemas/" + fingerprint))
          .timeout(Duration.ofSeconds(10)).build();
      HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
      if (resp.statusCode() == 404) {
        throw new Refused("the router has no schema " + fingerprint);
      }
      if (resp.statusCode() != 200) {
        throw new IOException("GET /schemas/" + fingerprint + " answered " + resp.statusCode());
      }
      s = new Schema.Parser().parse(resp.body());
      schemas.put(fingerprint, s);
    }
    return s;
  }

  static String header(Map<String, Object> headers, String name) throws Refused {
    Object v = headers == null ? null : headers.get(name);
    if (v == null) {
      throw new Refused("no " + name + " header");
    }
    return v.toString(); // LongString, Long or Integer
  }

  static String hex(byte[] b, int from, int to) {
    StringBuilder sb = new StringBuilder();
    for (int i = from; i < to; i++) {
      sb.append(String.format("%02x", b[i] & 0xff));
    }
    return sb.toString();
  }

  static String jsonString(String s) {
    StringBuilder sb = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        sb.append('\\').append(c);
      } else if (c < 0x20) {
        sb.append(String.format("\\u%04x", (int) c));
      } else {
        sb.append(c);
      }
    }
    return sb.append('"').toString();
  }

  /** Verifies and decodes one delivery into its JSON line. */
  String decode(AMQP.BasicProperties props, byte[] body) throws Exception {
    Map<String, Object> h = props.getHeaders();
    String messageId = props.getMessageId();
    if (messageId == null) {
      throw new Refused("no message_id");
    }
    String item = header(h, "govbus-item");
    String version = header(h, "govbus-version");
    String op = header(h, "govbus-op");
    String grant = header(h, "govbus-grant");
    String grantRevision = header(h, "govbus-grant-revision");
    String keyId = header(h, "govbus-key-id");
    byte[] signature = b64(header(h, "govbus-signature"), "govbus-signature");
    byte[] signed = deliveryBytes(messageId, item, version, op, grant, grantRevision, body);
    // The audience is this agency: a batch signed for another recipient does not verify.
    String statement = batchStatement(h, keyId, signed);
    verifyPlatform(keyId, statement.getBytes(StandardCharsets.UTF_8), signature);
    if (body.length < 10 || (body[0] & 0xff) != 0xc3 || body[1] != 0x01) {
      throw new Refused("not an Avro single-object body");
    }
    String fingerprint = hex(body, 2, 10);
    Schema writer = schema(fingerprint);
    BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(body, 10, body.length - 10, null);
    GenericRecord record = new GenericDatumReader<GenericRecord>(writer).read(null, decoder);
    if (!decoder.isEnd()) {
      throw new Refused("trailing bytes after the record");
    }
    return "{\"message_id\":" + jsonString(messageId) + ",\"item\":" + jsonString(item)
        + ",\"grant\":" + jsonString(grant) + ",\"version\":" + version
        + ",\"op\":" + jsonString(op) + ",\"fingerprint\":" + jsonString(fingerprint)
        + ",\"record\":" + record + "}"; // GenericData renders a record as JSON
  }

  /** Your agency's work with one record. Here: print it as a JSON line. */
  static void handle(String line) {
    System.out.println(line);
    System.out.flush();
  }

  public static void main(String[] args) throws Exception {
    String envFile = null;
    long count = Long.MAX_VALUE;
    long idleSeconds = 0;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--env-file": envFile = args[++i]; break;
        case "--count": count = Long.parseLong(args[++i]); break;
        case "--idle-seconds": idleSeconds = Long.parseLong(args[++i]); break;
        default:
          System.err.println("usage: Agency --env-file FILE [--count N] [--idle-seconds S]");
          System.exit(2);
      }
    }
    if (envFile == null) {
      System.err.println("--env-file is required (the file `govbus provision` wrote for your agency)");
      System.exit(2);
    }
    Map<String, String> env = readEnvFile(Path.of(envFile));
    String queue = env.get("GOVBUS_QUEUE");
    Agency agency = new Agency(
        env.get("GOVBUS_AGENCY"),
        Base64.getDecoder().decode(env.get("GOVBUS_PLATFORM_PUBLIC_KEY")),
        env.get("GOVBUS_PLATFORM_KEY_ID"),
        env.getOrDefault("GOVBUS_ROUTER_URL", "http://127.0.0.1:9200"));

    // A cluster's nodes, comma-separated (same account and vhost): the client connects to
    // the first that answers. When the connection is lost (its node stopped), the client's
    // automatic recovery connects again through the list, every second, and registers the
    // consumer again; deliveries not acked come again, under the same message ids.
    String[] urls = env.get("GOVBUS__AMQP__URL").split(",");
    ConnectionFactory factory = new ConnectionFactory();
    factory.setUri(urls[0].trim());
    List<Address> nodes = new ArrayList<>();
    for (String u : urls) {
      if (u.isBlank()) {
        continue;
      }
      URI uri = URI.create(u.trim());
      int port = uri.getPort() > 0 ? uri.getPort()
          : ("amqps".equals(uri.getScheme()) ? 5671 : 5672);
      nodes.add(new Address(uri.getHost(), port));
    }
    factory.setAutomaticRecoveryEnabled(true);
    factory.setTopologyRecoveryEnabled(true);
    factory.setNetworkRecoveryInterval(1000);
    Connection connection = factory.newConnection(nodes);
    Channel channel = connection.createChannel();
    channel.basicQos(100);
    final long limit = count;
    AtomicLong seen = new AtomicLong();
    AtomicLong lastAt = new AtomicLong(System.nanoTime());
    CountDownLatch done = new CountDownLatch(1);
    String consumerTag = channel.basicConsume(queue, false, new DefaultConsumer(channel) {
      @Override
      public void handleDelivery(String tag, Envelope envelope, AMQP.BasicProperties props,
          byte[] body) throws IOException {
        lastAt.set(System.nanoTime());
        if (seen.get() >= limit) {
          return; // not acked: redelivered to the next consumer
        }
        Map<String, Object> h = props.getHeaders();
        if (h != null && h.get("govbus-kind") != null
            && "checkpoint".equals(h.get("govbus-kind").toString())) {
          // A signed head of your ledger chain (govbus ledger verify --checkpoints); keep it
          // if you audit the platform (govbus-agency tail --checkpoints DIR does).
          channel.basicAck(envelope.getDeliveryTag(), false);
          return;
        }
        try {
          handle(agency.decode(props, body));
          channel.basicAck(envelope.getDeliveryTag(), false);
        } catch (Refused e) {
          System.err.println("rejected " + props.getMessageId() + ": " + e.getMessage()
              + " (dead-lettered to " + queue + ".dlq)");
          channel.basicReject(envelope.getDeliveryTag(), false);
        } catch (Exception e) {
          // The router unreachable, say: leave it unacked; it is redelivered on reconnect.
          System.err.println("cannot handle " + props.getMessageId() + " now: " + e);
          channel.basicNack(envelope.getDeliveryTag(), false, true);
          return;
        }
        if (seen.incrementAndGet() >= limit) {
          done.countDown();
        }
      }
    });
    while (!done.await(200, TimeUnit.MILLISECONDS)) {
      if (idleSeconds > 0 && System.nanoTime() - lastAt.get() > idleSeconds * 1_000_000_000L) {
        break;
      }
    }
    // Cancel first: the queue applies the acks before the cancel (on a bare close, RabbitMQ
    // 3.10 could put the last acked deliveries back; they would come again).
    channel.basicCancel(consumerTag);
    channel.close();
    connection.close();
  }
}
