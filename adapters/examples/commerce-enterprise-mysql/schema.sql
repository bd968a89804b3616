-- The commerce bureau's registration table in MySQL or MariaDB, as the example adapter reads it.
-- mariadb -h 127.0.0.1 -u root test < schema.sql
CREATE TABLE IF NOT EXISTS enterprise_registration (
    id               BIGINT AUTO_INCREMENT PRIMARY KEY,
    uscc             VARCHAR(18) NOT NULL,   -- 统一社会信用代码
    reg_no           VARCHAR(32),            -- 企业注册号
    name             VARCHAR(200),           -- 企业名称
    legal_rep_name   VARCHAR(100),           -- 法定代表人姓名
    legal_rep_id     VARCHAR(18),            -- 法定代表人公民身份号码
    division_code    VARCHAR(6),             -- 行政区划代码
    division_name    VARCHAR(100),           -- 行政区划
    address          VARCHAR(400),           -- 登记住所
    ent_type         VARCHAR(100),           -- 企业类型
    industry         VARCHAR(100),           -- 行业
    established      DATE,                   -- 成立日期
    authority        VARCHAR(200),           -- 登记机关
    deleted          BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY enterprise_registration_keyset (updated_at, id)
) DEFAULT CHARSET = utf8mb4;

INSERT INTO enterprise_registration (uscc, reg_no, name, legal_rep_name, legal_rep_id, division_code, division_name,
    address, ent_type, industry, established, authority, updated_at)
SELECT * FROM (
  SELECT '91440106MA59C0XK09', '440106000123456', '广州天河示例科技有限公司', '张伟', '440106198001010019', '440106', '广州市天河区',
   '广州市天河区天河路1号', '有限责任公司', '软件和信息技术服务业', DATE '2016-03-01', '广州市天河区市场监督管理局', TIMESTAMP '2016-05-17 09:30:00'
  UNION ALL
  SELECT '91440104MA59D1YL15', '440104000654321', '广州越秀示例贸易有限公司', '王芳', '440104198503150027', '440104', '广州市越秀区',
   '广州市越秀区北京路2号', '有限责任公司', '批发业', DATE '2015-11-20', '广州市越秀区市场监督管理局', TIMESTAMP '2016-05-17 09:31:00'
) AS v
WHERE NOT EXISTS (SELECT 1 FROM enterprise_registration);
