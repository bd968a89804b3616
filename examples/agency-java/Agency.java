// govbus agency starter kit for Java: the RabbitMQ Java client and the Apache Avro Java library.
//
// Consumes your agency's queue with the account `govbus provision` gave you, verifies the
// platform's Ed25519 signature on every delivery (JDK 15+ has Ed25519), decodes the Avro
// single-object body with the writer schema named by its fingerprint (fetched once from the
// router's /schemas/{fingerprint}), prints the record as one JSON line, and acks. A delivery that
// does not verify or decode is rejected without requeue: RabbitMQ dead-letters it to
// agency.<id>.dlq.
//
//   ./run.sh --env-file provisioned/agencies/civil.env
//
// Copy this file and replace handle() with your agency's work; the delivery is acked only after
// it returns. Any Avro 1.8+ and RabbitMQ client 5.x will do (see pom.xml for Maven).
import com.rabbitmq.client.AMQP;
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
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.time.Duration;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
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

  final PublicKey platformKey;
  final String routerUrl;
  final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  final Map<String, Schema> schemas = new ConcurrentHashMap<>();

  Agency(PublicKey platformKey, String routerUrl) {
    this.platformKey = platformKey;
    this.routerUrl = routerUrl.replaceAll("/+$", "");
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
    byte[] signature = Base64.getDecoder().decode(header(h, "govbus-signature"));
    byte[] prefix = (messageId + "\n" + item + "\n" + version + "\n" + op + "\n")
        .getBytes(StandardCharsets.UTF_8);
    Signature verifier = Signature.getInstance("Ed25519");
    verifier.initVerify(platformKey);
    verifier.update(prefix);
    verifier.update(body);
    if (!verifier.verify(signature)) {
      throw new Refused("the platform signature does not verify");
    }
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
        + ",\"grant\":" + jsonString(header(h, "govbus-grant")) + ",\"version\":" + version
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
        ed25519(Base64.getDecoder().decode(env.get("GOVBUS_PLATFORM_PUBLIC_KEY"))),
        env.getOrDefault("GOVBUS_ROUTER_URL", "http://127.0.0.1:9200"));

    ConnectionFactory factory = new ConnectionFactory();
    factory.setUri(env.get("GOVBUS__AMQP__URL"));
    Connection connection = factory.newConnection();
    Channel channel = connection.createChannel();
    channel.basicQos(100);
    final long limit = count;
    AtomicLong seen = new AtomicLong();
    AtomicLong lastAt = new AtomicLong(System.nanoTime());
    CountDownLatch done = new CountDownLatch(1);
    channel.basicConsume(queue, false, new DefaultConsumer(channel) {
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
          // if you audit the platform (govbus tail --checkpoints DIR does).
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
    channel.close();
    connection.close();
  }
}
