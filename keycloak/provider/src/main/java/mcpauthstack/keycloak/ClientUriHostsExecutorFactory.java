package mcpauthstack.keycloak;

import java.util.List;
import org.keycloak.Config;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.services.clientpolicy.executor.ClientPolicyExecutorProviderFactory;

/** Registers {@link ClientUriHostsExecutor} as the client-policy executor {@value #PROVIDER_ID}. */
public final class ClientUriHostsExecutorFactory implements ClientPolicyExecutorProviderFactory {

    public static final String PROVIDER_ID = "mcp-client-uri-hosts";
    public static final String HTTPS_HOSTS = "https-hosts";

    private static final ProviderConfigProperty HTTPS_HOSTS_PROPERTY = new ProviderConfigProperty(
            HTTPS_HOSTS,
            "HTTPS hosts",
            "Besides localhost, 127.0.0.1 and [::1] (http or https), the hosts a client's URLs may name over https, compared as text.",
            ProviderConfigProperty.MULTIVALUED_STRING_TYPE,
            null);

    @Override
    public ClientUriHostsExecutor create(KeycloakSession session) {
        return new ClientUriHostsExecutor(session);
    }

    @Override
    public void init(Config.Scope config) {
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
    }

    @Override
    public void close() {
    }

    @Override
    public String getId() {
        return PROVIDER_ID;
    }

    @Override
    public String getHelpText() {
        return "Keeps anonymous registrations to the OpenID Connect endpoint (RFC 7591); refuses a client whose redirect, post-logout or front-channel logout URL names a host other than loopback or the listed https hosts, compared as text (never resolved), and drops a client_uri outside them; refuses the URLs Keycloak itself would request (sector identifier, JWKS, request objects, back-channel logout, CIBA notification).";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return List.of(HTTPS_HOSTS_PROPERTY);
    }
}
