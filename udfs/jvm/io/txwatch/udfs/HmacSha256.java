package io.txwatch.udfs;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.spark.sql.api.java.UDF2;

/**
 * Spark SQL function {@code txwatch_hmac_sha256(key_variable, message)}: the lowercase hex
 * HMAC-SHA256 (RFC 2104) of {@code message} (UTF-8) under the key held by the environment
 * variable named {@code key_variable}, read where the function runs: on each executor.
 *
 * <p>The key never enters a query plan: the plan holds the variable's name, so the Spark UI,
 * an event log or {@code explain()} show nothing that recomputes a token. A missing or empty
 * variable fails the task with a message that says how to set it on a cluster.
 *
 * <p>Registered by {@code txwatch.infra.session.create_session}; built by
 * {@code scripts/setup.sh} with the JDK's {@code javac} against the installed pyspark's jars.
 */
public final class HmacSha256 implements UDF2<String, String, String> {
  private static final long serialVersionUID = 1L;
  private static final String ALGORITHM = "HmacSHA256";
  private static final char[] HEX = "0123456789abcdef".toCharArray();

  // Mac objects are not thread-safe: one per task thread and key variable.
  private static final ThreadLocal<Map<String, Mac>> MACS = ThreadLocal.withInitial(HashMap::new);

  @Override
  public String call(String keyVariable, String message) {
    if (message == null) {
      return null;
    }
    Mac mac = MACS.get().computeIfAbsent(keyVariable, HmacSha256::newMac);
    byte[] digest = mac.doFinal(message.getBytes(StandardCharsets.UTF_8));
    char[] out = new char[digest.length * 2];
    for (int i = 0; i < digest.length; i++) {
      out[2 * i] = HEX[(digest[i] >> 4) & 0xF];
      out[2 * i + 1] = HEX[digest[i] & 0xF];
    }
    return new String(out);
  }

  private static Mac newMac(String keyVariable) {
    String key = System.getenv(keyVariable);
    if (key == null || key.isEmpty()) {
      throw new IllegalStateException(
          "environment variable " + keyVariable + " is not set where this task runs: it holds"
              + " the secret key for tokens. On a cluster, pass it to the executors with"
              + " spark.executorEnv." + keyVariable + " (or your cluster's secret mechanism)");
    }
    if (!key.chars().allMatch(c -> c < 128)) {
      // The environment is decoded with this JVM's locale: other bytes, other tokens.
      throw new IllegalStateException(
          "environment variable " + keyVariable + " holds characters outside ASCII: a token key"
              + " must be ASCII (e.g. openssl rand -hex 32)");
    }
    try {
      Mac mac = Mac.getInstance(ALGORITHM);
      mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), ALGORITHM));
      return mac;
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is not available in this JVM", e);
    }
  }
}
